"""Tokenizer backends: HF `tokenizers` (the reference) and the verified tiktoken fast path.

A backend turns a list of texts into flat ids plus offsets, the shape Arrow wants,
so that no list of lists is ever built for the output.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from prep.errors import UserError

BACKENDS = ("auto", "tokenizers", "tiktoken")


class Backend(Protocol):
    name: str

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids: uint32, offsets: int64 of len(texts) + 1)."""
        ...


@functools.cache
def load_hf_tokenizer(path: str | Path):
    """Load a tokenizer.json with padding and truncation switched off (ids as `encode` gives).

    Cached: the coordinator needs it several times (describe, end-of-document id), and a large
    vocabulary takes a good part of a second to load."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise UserError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class TokenizersBackend:
    """HF `tokenizers`: any tokenizer.json; ids are `Tokenizer.encode(text).ids`."""

    name = "tokenizers"

    def __init__(self, path: str | Path) -> None:
        self.tokenizer = load_hf_tokenizer(path)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch_fast(texts)
        id_lists = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        offsets = np.zeros(len(id_lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.uint32, count=int(offsets[-1]))
        return ids, offsets


@dataclass
class TokenizerInfo:
    """What the manifest records about the tokenizer and the backend chosen for it."""

    path: str
    sha256: str
    vocab_size: int
    backend: str = "tokenizers"
    backend_reason: str = ""
    verification: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The verified fast backend itself: workers unpickle it instead of converting again (~3x cheaper).
    instance: Backend | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "verification": self.verification,
        }


def describe_tokenizer(path: str | Path) -> TokenizerInfo:
    """Check the file loads; note padding/truncation it configures (prep switches them off)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    raw = path.read_bytes()
    tokenizer = load_hf_tokenizer(path)
    info = TokenizerInfo(
        path=str(path), sha256=hashlib.sha256(raw).hexdigest(), vocab_size=tokenizer.get_vocab_size()
    )
    data = json.loads(raw)
    for key in ("padding", "truncation"):
        if data.get(key):
            info.notes.append(f"the tokenizer file configures {key}; prep switches it off (ids as encode gives)")
    return info


def eos_id(path: str | Path, token: str | None) -> int:
    """The id appended after each document when the pipeline asks for it."""
    tokenizer = load_hf_tokenizer(path)
    candidates = [token] if token else ["<|endoftext|>", "</s>", "<eos>", "[SEP]"]
    for candidate in candidates:
        tid = tokenizer.token_to_id(candidate)
        if tid is not None:
            return tid
    raise UserError(f"append_eos: the tokenizer has no token {candidates[0]!r}; set eos_token in the pipeline")


def choose_backend(info: TokenizerInfo, requested: str, sample_texts: Sequence[str]) -> TokenizerInfo:
    """Decide the backend once, in the coordinator; workers load the one chosen."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}; choose one of: {', '.join(BACKENDS)}")
    if requested == "tokenizers":
        info.backend, info.backend_reason = "tokenizers", "requested"
        return info
    from prep.text import tiktoken_backend

    try:
        fast = tiktoken_backend.convert(info.path)
    except tiktoken_backend.Unsupported as exc:
        if requested == "tiktoken":
            raise UserError(f"--backend tiktoken: unsupported tokenizer: {exc}") from None
        info.backend, info.backend_reason = "tokenizers", f"tiktoken fast path declined: {exc}"
        return info
    result = tiktoken_backend.verify(info.path, fast, sample_texts)
    info.verification = {
        "ok": result.ok,
        "documents": result.documents,
        "differing": result.differing,
        "first_difference": result.first_difference,
        "seconds": round(result.seconds, 4),
    }
    if result.ok:
        info.backend, info.backend_reason, info.instance = "tiktoken", "converted and verified", fast
    elif requested == "tiktoken":
        raise UserError(f"--backend tiktoken: verification failed: {result.first_difference}")
    else:
        info.backend = "tokenizers"
        info.backend_reason = f"tiktoken verification failed ({result.first_difference}); using tokenizers"
    return info


def load_backend(path: str | Path, name: str) -> Backend:
    """Inside a worker: build the backend the coordinator chose."""
    if name == "tiktoken":
        from prep.text import tiktoken_backend

        return tiktoken_backend.convert(path)
    return TokenizersBackend(path)
