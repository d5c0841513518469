"""Tokenizer backends: HF `tokenizers` (the reference; the stable 0.2x API, or 1.x with `prep[fast]`) and
the verified tiktoken fast path (0.2x only).

A backend turns a list of texts into flat ids plus offsets, the shape Arrow wants,
so that no list of lists is ever built for the output.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from prep.errors import UserError
from prep.text.cache import cache_dir
from prep.text.hf import hf_backend_name, load_hf_tokenizer, tokenizers_major

BACKENDS = ("auto", "tokenizers", "tokenizers-1", "tiktoken")


class Backend(Protocol):
    name: str

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids: uint32, offsets: int64 of len(texts) + 1)."""
        ...


def _offsets(id_lists: Sequence) -> np.ndarray:
    """Per-document ids (lists or arrays) -> int64 offsets, len(id_lists) + 1."""
    offsets = np.zeros(len(id_lists) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists)), out=offsets[1:])
    return offsets


class TokenizersBackend:
    """HF `tokenizers` 0.2x: any tokenizer.json; ids are `Tokenizer.encode(text).ids`."""

    name = "tokenizers"

    def __init__(self, path: str | Path) -> None:
        self.tokenizer = load_hf_tokenizer(path)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        id_lists = [e.ids for e in self.tokenizer.encode_batch_fast(texts)]
        offsets = _offsets(id_lists)
        ids = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.uint32, count=int(offsets[-1]))
        return ids, offsets


class Tokenizers1Backend:
    """HF `tokenizers` 1.x (`prep[fast]`): the same ids, ~17x faster per core, as numpy arrays (`ids_array`).

    A text at a time, not 1.x's `encode_batch`: that call runs a pipeline of two threads even with
    RAYON_NUM_THREADS=1, which costs 14-37 % more CPU for the same ids (GPT-2, Qwen2, BERT on the shared corpus)
    and ~40 % more per one-line document, CPU that a worker's neighbours on a busy machine need. Padding and
    truncation are off on the tokenizer itself (`load_hf_tokenizer`), not per call: the keywords cost ~0.3 µs a
    call, ~17 % of a one-line document's encoding."""

    name = "tokenizers-1"

    def __init__(self, path: str | Path) -> None:
        self.tokenizer = load_hf_tokenizer(path)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encode = self.tokenizer.encode
        arrays = [encode(text).ids_array for text in texts]
        offsets = _offsets(arrays)
        ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
        return ids.astype(np.uint32, copy=False), offsets


def hf_backend(path: str | Path) -> Backend:
    """The backend of the installed `tokenizers` API."""
    return TokenizersBackend(path) if tokenizers_major() == 0 else Tokenizers1Backend(path)


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


def _vocab(data: dict) -> dict[str, int]:
    """token -> id as `tokenizers` resolves it (added tokens first, then the model's vocabulary).

    Read from the JSON, because the 1.x API has no `token_to_id` or `get_vocab_size`."""
    vocab = data.get("model", {}).get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids by position
        vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
    return vocab | {t["content"]: t["id"] for t in data.get("added_tokens") or []}


def vocabulary(path: str | Path) -> dict[str, int]:
    """token -> id of a tokenizer.json, added tokens included, in either tokenizers API (read-only: shared)."""
    return _facts(path)[0]


def _facts(path: str | Path) -> tuple[dict[str, int], tuple[str, ...]]:
    """(vocabulary, the settings of `padding` and `truncation` the file configures), parsed once per version of
    the file in a process: describing the tokenizer, its id space and its end-of-text id all need them, and a
    large tokenizer.json takes ~0.1 s (GPT-2) to ~0.5 s (151k ids) to parse."""
    stat = os.stat(path)
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> tuple[dict[str, int], tuple[str, ...]]:
    data = json.loads(Path(path).read_bytes())
    return _vocab(data), tuple(key for key in ("padding", "truncation") if data.get(key))


def describe_tokenizer(path: str | Path) -> TokenizerInfo:
    """Check the file loads, once per file and `tokenizers` version (the workers load it anyway; a large
    vocabulary takes ~0.2 s, on the coordinator's start); note padding/truncation it configures (prep switches
    them off)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    marker = _loads_marker(sha256)
    if not marker.exists():
        load_hf_tokenizer(path)
        with contextlib.suppress(OSError):  # no cache: checked again next time
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    vocab, configured = _facts(path)
    info = TokenizerInfo(path=str(path), sha256=sha256, vocab_size=len(vocab))
    for key in configured:
        info.notes.append(f"the tokenizer file configures {key}; prep switches it off (ids as encode gives)")
    return info


def _loads_marker(sha256: str) -> Path:
    """A file whose presence says that this `tokenizers` loaded a tokenizer.json of these bytes."""
    import tokenizers

    return cache_dir() / "tokenizers-that-load" / f"{sha256}-{tokenizers.__version__}"


def wants_sample(requested: str) -> bool:
    """Whether `choose_backend` verifies a fast path on sample texts (else the coordinator need not parse any)."""
    return requested in ("auto", "tiktoken") and tokenizers_major() < 1


@functools.cache
def eos_id(path: str | Path, token: str | None) -> int:
    """The id appended after each document when the pipeline asks for it.

    Read from the JSON, so that a worker given a converted backend does not load the tokenizer a second time."""
    try:
        vocab = vocabulary(path)
    except (OSError, ValueError) as exc:  # describe_tokenizer tells the coordinator first; this is for the record
        raise UserError(f"cannot read tokenizer {path}: {exc}") from None
    candidates = [token] if token else ["<|endoftext|>", "</s>", "<eos>", "[SEP]"]
    for candidate in candidates:
        if candidate in vocab:
            return vocab[candidate]
    raise UserError(f"append_eos: the tokenizer has no token {candidates[0]!r}; set eos_token in the pipeline")


def choose_backend(info: TokenizerInfo, requested: str, sample_texts: Sequence[str]) -> TokenizerInfo:
    """Decide the backend once, in the coordinator; workers load the one chosen.

    `auto` takes the fastest backend whose ids are exact: tokenizers 1.x where installed (the
    reference itself), else the tiktoken path where it converts and verifies, else tokenizers 0.x."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}; choose one of: {', '.join(BACKENDS)}")
    if requested == "tokenizers-1" and tokenizers_major() < 1:
        raise UserError("--backend tokenizers-1 needs tokenizers 1.x: pip install 'prep[fast]'")
    if requested in ("tokenizers", "tokenizers-1"):
        info.backend, info.backend_reason = hf_backend_name(), "requested"
        return info
    if tokenizers_major() >= 1:
        if requested == "tiktoken":
            raise UserError("--backend tiktoken needs the tokenizers 0.2x API to convert and verify, and tokenizers "
                            f"{tokenizers_major()}.x is installed (faster itself): use --backend auto")
        info.backend, info.backend_reason = hf_backend_name(), "tokenizers 1.x installed: exact and the fastest"
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
    return hf_backend(path)
