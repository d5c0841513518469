"""The Hugging Face `tokenizers` library in either of its APIs (0.2x stable, 1.x `prep[fast]`): loading a
tokenizer.json once per process with padding and truncation off, and its ids. Shared by every backend and the
tiktoken converter."""

from __future__ import annotations

import functools
from pathlib import Path

from prep.errors import UserError


@functools.cache
def tokenizers_major() -> int:
    """The installed `tokenizers` major version: 0 (stable 0.2x API) or 1 (the 1.x API, `prep[fast]`)."""
    import tokenizers

    return int(tokenizers.__version__.split(".")[0])


def hf_backend_name() -> str:
    """What the manifest calls the installed `tokenizers`: "tokenizers" (0.2x) or "tokenizers-1"."""
    return "tokenizers" if tokenizers_major() == 0 else f"tokenizers-{tokenizers_major()}"


def switch_off_padding(tokenizer) -> None:
    """Padding and truncation off (ids as `encode` gives), in either API: 0.x has methods, 1.x attributes."""
    if hasattr(tokenizer, "no_padding"):
        tokenizer.no_padding()
        tokenizer.no_truncation()
    else:
        tokenizer.padding = None
        tokenizer.truncation = None


def load_hf_tokenizer(path: str | Path):
    """Load a tokenizer.json with padding and truncation switched off (ids as `encode` gives).

    Cached: this is the process's one load of the file (describe, verification, the backend and
    the tiktoken fallback share it), and a large vocabulary takes a good part of a second to load."""
    return _load_hf_tokenizer(str(path))


@functools.cache
def _load_hf_tokenizer(path: str):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception (1.x: ValueError) for bad files
        raise UserError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from None
    switch_off_padding(tokenizer)
    return tokenizer


def hf_encode_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """`tokenizers`' ids (special tokens added) in either API: 0.x `encode_batch_fast` skips offsets."""
    return [e.ids for e in getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)(texts)]
