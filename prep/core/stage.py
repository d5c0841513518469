"""The stage: a pure function from an input batch to an output batch.

It knows nothing of processes or files, so the local and the Ray engine run the same
code, and a test can call it directly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.config import PipelineConfig
from prep.core.dedup import MinHasher, dedup_keys, dedup_settings, pack_sets, shingle_sets
from prep.io.records import Parsed
from prep.text import filters
from prep.text.arrow import arrow_of
from prep.text.features import FEATURES, check_feature_names, compute_features
from prep.text.filters import Verdict, blank, bounds_verdict, judge, merge, text_verdict
from prep.text.tokenizer import Backend, eos_id, load_backend

PIECE_CHARS = 1 << 18  # a longer document is tokenized in pieces of about this size (bounded memory)
WINDOW_CHARS = 2048  # context each side of a cut in which it must change no token
_CUTS = re.compile(r"(?<=\w)(?= \w)|(?<=\S)(?=\n\S)|(?<=[。！？，、；：])(?=\w)")  # where pre-tokens usually end
_TRIES = 32  # candidate cuts tried near each piece boundary before the rest is tokenized whole


def selected_features(config: PipelineConfig) -> list[str]:
    """The pipeline's feature list with `all` expanded; num_tokens is always a column."""
    names = list(FEATURES) if "all" in config.features else check_feature_names(config.features)
    return [n for n in names if n != "num_tokens"]


@dataclass
class StageStats:
    documents: int = 0
    filtered: int = 0
    filtered_by: dict[str, int] = field(default_factory=dict)  # first rule failed -> documents
    filter_skipped: dict[str, int] = field(default_factory=dict)  # rule set -> documents it did not judge (CJK)
    filtered_rows: list[dict] = field(default_factory=list)  # with keep_filtered: {id, rule, value, threshold}
    tokens: int = 0
    tokenize_s: float = 0.0
    features_s: float = 0.0
    filter_s: float = 0.0
    dedup_keys: bytes = b""  # with dedup: prep.core.dedup keys of the documents kept, in order (the writer decides)
    dedup_bands: bytes = b""  # with near dedup: their LSH band keys
    dedup_sigs: bytes = b""  # with near dedup, --keep-filtered and no threshold: their MinHash signatures
    dedup_shingles: bytes = b""  # with near dedup and a threshold: their shingle sets (prep.core.dedup.pack_sets)

    def add(self, verdict: Verdict, ids: pa.Array, keep_rows: bool) -> None:
        """Count the documents a verdict removed (and, if asked, keep their ids and failing values)."""
        for rule, count in verdict.counts().items():
            self.filtered_by[rule] = self.filtered_by.get(rule, 0) + count
            self.filtered += count
        for name, count in verdict.skipped.items():
            self.filter_skipped[name] = self.filter_skipped.get(name, 0) + count
        if keep_rows:
            gone = np.flatnonzero(~verdict.keep)
            values, thresholds = verdict.value[gone].tolist(), verdict.threshold[gone].tolist()
            for i, value, threshold in zip(gone.tolist(), values, thresholds, strict=True):
                self.filtered_rows.append({
                    "id": ids[i].as_py(), "rule": verdict.names[verdict.rule[i]],
                    "value": None if value != value else value,
                    "threshold": None if threshold != threshold else threshold,
                })


class Stage:
    """Filter, tokenize and annotate one batch of documents."""

    def __init__(self, config: PipelineConfig, backend: Backend | str = "tokenizers") -> None:
        self.config = config
        self.backend = load_backend(config.tokenizer, backend) if isinstance(backend, str) else backend
        self.features = selected_features(config)
        self.rule_sets = {k: v for k, v in config.filters.items() if k != "bounds"}
        self.bounds = config.filters.get("bounds", {})
        if self.rule_sets:
            filters.prepare(compiled=True)  # before the first chunk, not on it
        # features the bounds need but the output does not keep: computed, judged, then dropped
        self.bound_only = [f for f in self.bounds if f not in self.features and f != "num_tokens"]
        self.eos = eos_id(config.tokenizer, config.eos_token) if config.append_eos else None
        self.dedup = dedup_settings(config)
        self.hasher = (MinHasher(config.dedup_ngram, config.dedup_num_perm, config.dedup_bands, config.dedup_rows)
                       if config.dedup_near else None)

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats()
        texts = batch.column("text")
        if len(batch) and (self.config.drop_empty or self.rule_sets):
            t = time.process_time()
            verdict = judge([], len(batch))
            if self.config.drop_empty:
                verdict = judge([("empty", blank(texts).astype(np.float64), ">", 0.5)], len(batch))
            if self.rule_sets:
                verdict = merge(verdict, text_verdict(texts, self.rule_sets))
            if not verdict.keep.all():
                stats.add(verdict, batch.column("id"), self.config.keep_filtered)
                batch = batch.filter(arrow_of(verdict.keep, pa.bool_()))
                texts = batch.column("text")
            elif verdict.skipped:
                stats.add(verdict, batch.column("id"), False)
            stats.filter_s = time.process_time() - t
        keys = dedup_keys(texts) if self.dedup and self.dedup.exact else None
        sigs = bands = sets = None
        if self.hasher is not None:
            shingles = self.hasher.shingles(texts)
            sigs, has = self.hasher.minhash(*shingles)
            bands = self.hasher.band_keys(sigs)
            bands[~has] = 0  # no words: never a candidate
            sets = shingle_sets(*shingles) if self.dedup.shingle_sets else None
        t0 = time.process_time()
        ids, offsets = self._encode(texts)
        if self.eos is not None and len(batch):
            ids = np.insert(ids, offsets[1:], np.uint32(self.eos))
            offsets = offsets + np.arange(len(offsets), dtype=np.int64)
        input_ids = pa.ListArray.from_arrays(arrow_of(offsets, pa.int32()), arrow_of(ids, pa.uint32()))
        t1 = time.process_time()
        wanted = self.features + self.bound_only
        if keys is not None and "content_hash" in wanted:  # the dedup key begins with it: not computed twice
            features = compute_features(texts, input_ids, [f for f in wanted if f != "content_hash"])
            features["content_hash"] = arrow_of(keys[:, :8].copy().view("<u8").ravel(), pa.uint64())
            features = {name: features[name] for name in wanted}
        else:
            features = compute_features(texts, input_ids, wanted)
        stats.features_s = time.process_time() - t1
        stats.tokenize_s = t1 - t0
        stats.tokens = len(ids)

        columns = {"id": batch.column("id"), "input_ids": input_ids}
        columns["num_tokens"] = arrow_of(np.diff(offsets), pa.int64())
        columns.update(features)
        if self.config.keep_text:
            columns["text"] = texts
        for name in self.config.keep_columns:
            columns[name] = batch.column(name)
        if self.bounds and len(batch):
            t2 = time.process_time()
            verdict = bounds_verdict(columns, self.bounds, len(batch))
            if not verdict.keep.all():
                stats.add(verdict, batch.column("id"), self.config.keep_filtered)
                keep = arrow_of(verdict.keep, pa.bool_())
                columns = {name: pc.filter(column, keep) for name, column in columns.items()}
                keys = keys[verdict.keep] if keys is not None else None
                sigs = sigs[verdict.keep] if sigs is not None else None
                bands = bands[verdict.keep] if bands is not None else None
                sets = [s for s, keep in zip(sets, verdict.keep, strict=True) if keep] if sets is not None else None
                stats.tokens = int(pc.sum(columns["num_tokens"]).as_py() or 0)
            stats.filter_s += time.process_time() - t2
        for name in self.bound_only:
            del columns[name]
        stats.documents = len(columns["id"])
        if keys is not None:
            stats.dedup_keys = keys.tobytes()
        if bands is not None:
            stats.dedup_bands = bands.tobytes()
            if self.dedup.signatures:
                stats.dedup_sigs = sigs.tobytes()
            if sets is not None:
                stats.dedup_shingles = pack_sets(sets)
        return pa.RecordBatch.from_pydict(columns), stats

    def _encode(self, column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """The backend's ids, with each very long document tokenized in pieces: a tokenizer holds several hundred
        bytes per token of a text while it works on it, so a 100 MB document at once would need tens of GB. No
        text has more characters than bytes, so a batch whose texts are all short in bytes (the usual case) is
        passed whole without looking at each text (that look cost ~0.2 µs a text)."""
        texts = column.to_pylist()
        bytes_at_most = pc.max(pc.binary_length(column)).as_py() or 0
        if bytes_at_most <= 2 * PIECE_CHARS or all(len(t) <= 2 * PIECE_CHARS for t in texts):
            return self.backend.encode_batch(texts)
        # the others still in one batch: one call per document cost a batch with a long one ~40 % more CPU
        ids, bounds = self.backend.encode_batch([t for t in texts if len(t) <= 2 * PIECE_CHARS])
        short = iter(zip(bounds[:-1], bounds[1:], strict=True))
        docs = [self._encode_long(t) if len(t) > 2 * PIECE_CHARS else ids[slice(*next(short))] for t in texts]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in docs], out=offsets[1:])
        return np.concatenate(docs).astype(np.uint32, copy=False), offsets

    def _encode_long(self, text: str) -> np.ndarray:
        """Ids of one long text, exactly as the backend gives them for the whole text, computed in pieces.

        A cut is taken only where it changes no token: the backend must give the same ids for a window around it
        as for the window's two halves (without the special tokens it adds around every text), which holds at
        pre-token boundaries (a space or a newline before a word, for the usual pre-tokenizers). Where no such cut
        is found, the rest is tokenized whole: slower and larger, never different.
        """
        specials = self._specials()
        if specials is None:
            return self.backend.encode_batch([text])[0]
        prefix, suffix = specials
        pieces: list[np.ndarray] = []
        start = 0
        while len(text) - start > 2 * PIECE_CHARS:
            cut = self._safe_cut(text, start + PIECE_CHARS, len(prefix), len(suffix))
            if cut is None:
                break
            pieces.append(self._core(text[start:cut], prefix, suffix, first=not pieces, last=False))
            start = cut
        pieces.append(self._core(text[start:], prefix, suffix, first=not pieces, last=True))
        return np.concatenate(pieces)

    def _core(self, piece: str, prefix: np.ndarray, suffix: np.ndarray, first: bool, last: bool) -> np.ndarray:
        ids = self.backend.encode_batch([piece])[0]
        return ids[(0 if first else len(prefix)):(len(ids) if last else len(ids) - len(suffix))]

    def _safe_cut(self, text: str, near: int, n_prefix: int, n_suffix: int) -> int | None:
        for tries, match in enumerate(_CUTS.finditer(text, near, len(text) - PIECE_CHARS)):
            if tries == _TRIES:
                return None
            cut = match.start()
            window = text[cut - WINDOW_CHARS:cut + WINDOW_CHARS]
            ids, offsets = self.backend.encode_batch([window, window[:WINDOW_CHARS], window[WINDOW_CHARS:]])
            whole, left, right = (ids[offsets[i]:offsets[i + 1]] for i in range(3))
            joined = np.concatenate([left[:len(left) - n_suffix], right[n_prefix:]])
            if np.array_equal(whole, joined):
                return cut
        return None

    def _specials(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The ids the backend puts before and after every text (e.g. [CLS] and [SEP]): what the encodings of
        texts that share no token have in common at the start and at the end; None when they cannot be told
        apart from the texts' own tokens."""
        ids, offsets = self.backend.encode_batch(["a", "Z", "0", "."])
        docs = [ids[offsets[i]:offsets[i + 1]] for i in range(4)]
        n = min(len(d) for d in docs)
        p = next((i for i in range(n) if len({int(d[i]) for d in docs}) > 1), n)
        s = next((i for i in range(n - p) if len({int(d[len(d) - 1 - i]) for d in docs}) > 1), n - p)
        if any(len(d) - p - s < 1 for d in docs):
            return None
        return docs[0][:p], docs[0][len(docs[0]) - s:]


def input_stats(stats: dict, parsed: Parsed | None) -> dict:
    """A task's stats with what parsing it found, for the writer's accounting: records met, their text, and
    the bad ones (a raw chunk's counts arrive with its parts, a parsed chunk's with the chunk)."""
    if parsed is not None:
        stats.update(in_documents=parsed.documents_in, in_text_bytes=parsed.text_bytes, quarantine=parsed.quarantine)
    return stats
