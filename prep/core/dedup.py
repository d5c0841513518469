"""Deduplication, exact and near: keys computed in the workers, decisions taken in seq order where order is known.

Exact: a worker gives every document it keeps a 24-byte key: its `content_hash` (XXH3-64 of the text with
whitespace runs made one space, the ends stripped) followed by a second, independent digest of the same
normalised text (BLAKE2b-128). A document whose key equals that of an earlier kept one is removed. Two
documents with equal `content_hash` but different texts differ in the second digest (a chance of 2**-128), so a
64-bit collision never removes a distinct document, and no text is held to compare.

Near: MinHash signatures of lower-cased word n-gram shingles, vectorised with numpy over the batch, cut into
bands x rows; a document sharing a band hash with an earlier kept document is a near duplicate of the earliest
(with a threshold: of the earliest whose shingle set has at least that Jaccard similarity with its own; each
kept document's set of shingle hashes is then kept, 4 bytes a shingle, in the spillable index).

The decisions are taken by `Deduper`, fed in seq order by the writer (or by the Ray driver). The band index
(prep.core.bands: numpy sorted runs, or band-index actors on Ray) is looked up a batch at once; the rest of the
index lives in a dict below its memory budget and past it moves into an sqlite table on disk (the standard
library's embedded store), and the run goes on. Every committed shard's index records are appended to
`_dedup.jsonl`, whose committed length the journal records, so `--resume` rebuilds the same index and takes the
same decisions as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from prep.core.bands import BandStore
from prep.errors import UserError
from prep.text.arrow import arrow_of, numpy_of, string_scalar, utf8_of
from prep.text.features import each_text, normalised

KEY_BYTES = 24  # content_hash (8, little-endian as the feature) + independent digest (16)
_PERSON = b"prep-dedup-v1"
_ENTRY_OVERHEAD = 104  # a dict slot (amortised over resizes) beside the key and id objects
INDEX_FILE = "_dedup.jsonl"  # committed shards' index records; the journal gives its committed length
RULE_EXACT = "dedup_exact"
RULE_NEAR = "dedup_near"
_LOAD_BATCH = 65536  # index records whose band keys a resumed run adds at once


@dataclass(frozen=True)
class DedupSettings:
    """What the writer needs: the methods on, and the memory budget of the index."""

    exact: bool = False
    near: bool = False
    memory: int = 2 * 2**30
    keep_rows: bool = False  # --keep-filtered: each removed document's id, the id it duplicates, similarity
    ngram: int = 5
    num_perm: int = 112
    bands: int = 14
    rows: int = 8
    threshold: float | None = None  # near: a candidate must also have this Jaccard similarity of shingles

    @property
    def on(self) -> bool:
        return self.exact or self.near

    @property
    def signatures(self) -> bool:
        """Whether the signatures are kept: --keep-filtered without a threshold reports their estimate."""
        return self.near and self.keep_rows and self.threshold is None

    @property
    def shingle_sets(self) -> bool:
        """Whether each document's shingle set is kept: a threshold is checked on the shingles' Jaccard."""
        return self.near and self.threshold is not None


def parse_methods(value: str) -> list[str]:
    """`--dedup exact`, `--dedup exact,near`, `--dedup off` -> the methods on."""
    methods = [m.strip() for m in value.split(",") if m.strip()]
    if methods == ["off"]:
        return []
    bad = [m for m in methods if m not in ("exact", "near")]
    if bad or not methods:
        raise UserError(f"bad --dedup {value!r}: use exact, near, exact,near or off")
    return methods


def dedup_keys(texts: pa.Array) -> np.ndarray:
    """(n, 24) uint8: each text's content_hash then its independent 128-bit digest, both of the normalised text
    that the features' compiled pass gives (`prep.text.features.normalised`)."""
    keys = bytearray()
    for text in each_text(*normalised(texts)):
        keys += xxhash.xxh3_64_intdigest(text).to_bytes(8, "little")
        keys += hashlib.blake2b(text, digest_size=16, person=_PERSON).digest()
    return np.frombuffer(bytes(keys), np.uint8).reshape(-1, KEY_BYTES)


_P = np.uint64(0x100000001B3)  # FNV-1a, 64-bit
_FNV = np.uint64(0xCBF29CE484222325)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (uint64, wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_hashes(words: pa.Array) -> np.ndarray:
    """FNV-1a 64 of every word's UTF-8 bytes, mixed; vectorised over words, one step per byte position."""
    data, offsets = utf8_of(words)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(len(words), _FNV, np.uint64)
    active = np.arange(len(words))
    k = 0
    while len(active := active[lengths[active] > k]):
        h[active] = (h[active] ^ data[starts[active] + k].astype(np.uint64)) * _P
        k += 1
    return _mix(h)


@dataclass(frozen=True)
class MinHasher:
    """MinHash signatures of word n-gram shingles (lower-cased, split on whitespace) and their LSH bands."""

    ngram: int = 5
    num_perm: int = 112  # at least bands x rows: the first ones make the bands, all estimate a similarity
    bands: int = 14
    rows: int = 8
    seed: int = 1

    def shingles(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(every shingle's 64-bit hash, the documents' shingles one after another; (n,) shingles per document).
        A text with fewer than `ngram` words is one shingle of all of them; one with none has no shingle."""
        with np.errstate(over="ignore"):
            words = pc.utf8_split_whitespace(pc.utf8_lower(pc.coalesce(texts, string_scalar("", texts.type))))
            flat = pc.list_flatten(words)  # with an empty word for leading or trailing whitespace: dropped
            nonempty = arrow_of(numpy_of(pc.binary_length(flat)) > 0, pa.bool_())
            parent = numpy_of(pc.list_parent_indices(words).filter(nonempty))
            counts = np.bincount(parent, minlength=len(texts)).astype(np.int64)
            wh = _word_hashes(flat.filter(nonempty))
            doc_start = np.concatenate(([0], np.cumsum(counts)))[:-1]
            spans = np.maximum(counts - self.ngram + 1, 0)
            spans[(counts > 0) & (spans == 0)] = 1
            # shingle j of a document starts at its word j; it covers min(ngram, words) words
            doc_of = np.repeat(np.arange(len(counts)), spans)
            first = np.repeat(doc_start, spans) + (np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans))
            width = np.minimum(counts, self.ngram)[doc_of]
            shingle = np.zeros(len(first), np.uint64)
            padded = np.concatenate((wh, np.zeros(self.ngram, np.uint64)))
            for t in range(self.ngram):
                shingle = _mix(shingle * _P + np.where(t < width, padded[first + t], np.uint64(0)))
        return shingle, spans

    def signatures(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """((n, num_perm) uint32 signatures, (n,) bool: has words); a text without words has no signature (all
        ones) and is never a candidate."""
        return self.minhash(*self.shingles(texts))

    def minhash(self, shingle: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`signatures` from `shingles`' output."""
        sig = np.full((len(spans), self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        has = spans > 0
        if len(shingle):
            rng = np.random.default_rng(self.seed)
            a = rng.integers(1, 2**63, self.num_perm, dtype=np.uint64) | np.uint64(1)
            b = rng.integers(0, 2**63, self.num_perm, dtype=np.uint64)
            seg = (np.cumsum(spans) - spans)[has]
            with np.errstate(over="ignore"):
                for p in range(self.num_perm):  # one permutation at a time: contiguous, in cache
                    h = (shingle * a[p] + b[p]) >> np.uint64(32)
                    sig[has, p] = np.minimum.reduceat(h, seg)
        return sig, has

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(n, bands) uint64: a hash of each band's `rows` values."""
        with np.errstate(over="ignore"):
            keys = np.empty((len(sig), self.bands), np.uint64)
            for band in range(self.bands):
                h = np.full(len(sig), np.uint64(band + 1), np.uint64)
                for col in sig[:, band * self.rows:(band + 1) * self.rows].T:
                    h = _mix(h * _P + col.astype(np.uint64))
                keys[:, band] = h
        return keys


def shingle_sets(shingle: np.ndarray, spans: np.ndarray) -> list[bytes]:
    """Each document's distinct shingles as sorted uint32 (the top half of their hashes): what the threshold's
    Jaccard check compares. 4 bytes a shingle, where the text takes about 6 bytes a word."""
    doc_of = np.repeat(np.arange(len(spans)), spans)
    top = (shingle >> np.uint64(32)).astype(np.uint32)
    order = np.lexsort((top, doc_of))
    top, doc_of = top[order], doc_of[order]
    distinct = np.ones(len(top), bool)
    distinct[1:] = (top[1:] != top[:-1]) | (doc_of[1:] != doc_of[:-1])
    top, doc_of = top[distinct], doc_of[distinct]
    ends = np.cumsum(np.bincount(doc_of, minlength=len(spans)))
    return [top[start:end].tobytes() for start, end in zip(np.concatenate(([0], ends[:-1])), ends, strict=True)]


def pack_sets(sets: list[bytes]) -> bytes:
    """Shingle sets as one byte string: each one's length (uint32, little-endian), then its bytes."""
    return b"".join(len(s).to_bytes(4, "little") + s for s in sets)


def unpack_sets(data: bytes) -> list[bytes]:
    sets, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "little")
        sets.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return sets


def jaccard(a: bytes, b: bytes) -> float:
    """Jaccard similarity of two shingle sets (sorted distinct uint32)."""
    x, y = np.frombuffer(a, np.uint32), np.frombuffer(b, np.uint32)
    both = len(np.intersect1d(x, y, assume_unique=True))
    union = len(x) + len(y) - both
    return both / union if union else 0.0


class Index:
    """bytes key -> value (int, str or bytes); in a dict up to a memory budget, then in sqlite on disk."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.mem: dict[bytes, object] = {}
        self.mem_bytes = 0
        self.entries = 0
        self.db: sqlite3.Connection | None = None
        self._spill_dir: tempfile.TemporaryDirectory | None = None
        self.fetched: dict[bytes, object] = {}
        self.fetched_keys: set[bytes] = set()

    def get(self, key: bytes) -> object | None:
        found = self.mem.get(key)
        if found is None and self.db is not None:
            if key in self.fetched_keys:
                return self.fetched.get(key)
            row = self.db.execute("SELECT v FROM idx WHERE k = ?", (key,)).fetchone()
            found = row[0] if row else None
        return found

    def prefetch(self, keys: list[bytes]) -> None:
        """Look up many keys on disk at once (a batch's, before its documents are decided one by one): one
        query per 500 keys instead of one each. Valid until the next spill, which happens between batches."""
        self.fetched, self.fetched_keys = {}, set()
        if self.db is None:
            return
        self.fetched_keys = set(keys)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            query = f"SELECT k, v FROM idx WHERE k IN ({','.join('?' * len(part))})"
            self.fetched.update(self.db.execute(query, part).fetchall())

    def add(self, key: bytes, value: object) -> None:
        self.mem[key] = value
        self.entries += 1
        self.mem_bytes += sys.getsizeof(key) + sys.getsizeof(value) + _ENTRY_OVERHEAD

    def fit(self) -> None:
        """Spill if over budget (between batches: a batch's prefetched lookups stay valid while it is decided)."""
        if self.mem_bytes > self.memory:
            self.spill()

    def spill(self) -> None:
        """Move the in-memory entries to the on-disk table (made on the first spill)."""
        if self.db is None:
            self._spill_dir = tempfile.TemporaryDirectory(prefix="prep-dedup-")
            self.db = sqlite3.connect(os.path.join(self._spill_dir.name, "index.sqlite"))
            self.db.execute("PRAGMA journal_mode = OFF")
            self.db.execute("PRAGMA synchronous = OFF")
            self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages
            self.db.execute("CREATE TABLE idx (k BLOB PRIMARY KEY, v NOT NULL) WITHOUT ROWID")
        self.db.executemany("INSERT INTO idx VALUES (?, ?)", self.mem.items())
        self.db.commit()
        self.mem.clear()
        self.mem_bytes = 0
        self.fetched, self.fetched_keys = {}, set()

    @property
    def spilled(self) -> bool:
        return self.db is not None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None


def _ordinal(o: int) -> bytes:
    return o.to_bytes(8, "big")


class Bands(Protocol):
    """The band index: `BandStore` in the local writer, band-index actors on Ray (prep.engines.ray.band_index)."""

    def lookup(self, keys: np.ndarray) -> np.ndarray: ...
    def add(self, keys: np.ndarray, ords: np.ndarray, new: np.ndarray) -> None: ...
    @property
    def spilled(self) -> bool: ...
    def close(self) -> None: ...


def index_bands(bands: Bands, keys: np.ndarray, ords: np.ndarray, found: np.ndarray) -> None:
    """Add kept documents' band keys (rows in seq order, `found` their lookup) that the index lacks: each key
    with the first of them that has it."""
    new = found < 0
    for band in range(keys.shape[1]):
        first = np.zeros(len(keys), bool)
        first[np.unique(keys[:, band], return_index=True)[1]] = True
        new[:, band] &= first
    bands.add(keys, ords, new)


class _BatchBands:
    """A batch's band keys against the index, looked up at once: each key's ordinal in the index, and for a key
    the index lacks but that recurs in the batch, the first earlier document of the batch kept with it."""

    def __init__(self, bands: Bands, keys: np.ndarray) -> None:
        self.keys = keys
        self.has = keys.any(axis=1)  # no words: all zero, never a candidate
        self.found = bands.lookup(keys)
        self.found[~self.has] = -1
        self.first = np.empty(keys.shape, np.int64)
        repeats = np.empty(keys.shape, bool)
        for band in range(keys.shape[1]):
            _, first, inverse, counts = np.unique(keys[:, band], return_index=True, return_inverse=True,
                                                  return_counts=True)
            self.first[:, band], repeats[:, band] = first[inverse], counts[inverse] > 1
        self.repeats = repeats & (self.found < 0) & self.has[:, None]
        self.any_found = (self.found >= 0).any(axis=1).tolist()
        self.any_repeat = self.repeats.any(axis=1).tolist()
        self.claimed: dict[tuple[int, int], int] = {}  # (band, first row with the key) -> ordinal kept with it
        self.kept_rows: list[int] = []
        self.kept_ords: list[int] = []

    def candidates(self, i: int) -> list[int]:
        """The ordinals of the kept documents document i collides with, earliest first."""
        found = set(self.found[i][self.found[i] >= 0].tolist()) if self.any_found[i] else set()
        if self.any_repeat[i]:
            for band in np.flatnonzero(self.repeats[i]).tolist():
                o = self.claimed.get((band, int(self.first[i, band])))
                if o is not None:
                    found.add(o)
        return sorted(found)

    def keep(self, i: int, o: int) -> None:
        if not self.has[i]:
            return
        self.kept_rows.append(i)
        self.kept_ords.append(o)
        if self.any_repeat[i]:
            for band in np.flatnonzero(self.repeats[i]).tolist():
                self.claimed.setdefault((band, int(self.first[i, band])), o)

    def index(self, bands: Bands) -> None:
        rows = np.array(self.kept_rows, np.int64)
        if len(rows):
            index_bands(bands, self.keys[rows], np.array(self.kept_ords, np.int64), self.found[rows])


class Deduper:
    """The decisions, in the order documents are offered (the writer offers them in seq order).

    Every kept document gets an ordinal. The band index (`Bands`) maps each band key to the ordinal of the
    first kept document with it; `Index` maps `e`+exact key to that ordinal, `s`+ordinal to what a similarity
    is computed from (its shingle set with a threshold, else its signature, when --keep-filtered wants one)
    and, with --keep-filtered, `i`+ordinal to its id."""

    def __init__(self, settings: DedupSettings, bands: Bands | None = None) -> None:
        self.settings = settings
        self.index = Index(settings.memory // 2 if settings.near else settings.memory)
        self.bands = bands if bands is not None or not settings.near else BandStore(
            settings.bands, settings.memory - settings.memory // 2)
        self.kept = 0
        self.cluster_extra: dict[int, int] = {}  # ordinal of a kept document -> duplicates removed for it
        self.records: list[dict] = []  # index records since the last commit (for INDEX_FILE)

    def decide(self, ids: list, stats: dict) -> dict:
        """The decision for documents offered in order, from their part's stats (keys, bands, signatures or
        shingle sets): {"drop": their positions, "rows": filtered rows {id, rule, value, threshold,
        duplicate_of} if asked, "counts": removed per rule}. A plain dict: the Ray driver decides and sends it
        to the writer that applies it."""
        st, n = self.settings, len(ids)
        keys, band_bytes = stats.get("dedup_keys", b""), stats.get("dedup_bands", b"")
        similar = _similarity_data(st, stats)
        if ((st.exact and len(keys) != n * KEY_BYTES) or (st.near and len(band_bytes) != n * st.bands * 8)
                or (similar and len(similar) != n)):
            raise RuntimeError(f"dedup: {len(keys)} key and {len(band_bytes)} band bytes for {n} documents")
        batch = _BatchBands(self.bands, np.frombuffer(band_bytes, np.uint64).reshape(n, st.bands)) \
            if st.near else None
        if self.index.spilled and st.exact:
            self.index.prefetch([b"e" + keys[i * KEY_BYTES:(i + 1) * KEY_BYTES] for i in range(n)])
        drop, rows, counts = [], [], {}
        for i in range(n):
            key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES] if st.exact else b""
            sim = similar[i] if similar else b""
            first, rule, value = None, None, 1.0
            if st.exact:
                first, rule = self.index.get(b"e" + key), RULE_EXACT
            if first is None and batch is not None and batch.has[i]:
                first, value = self._near(batch.candidates(i), sim)
                rule = RULE_NEAR
            if first is None:
                o = self._keep(key, band_bytes[i * st.bands * 8:(i + 1) * st.bands * 8], sim, ids[i])
                if batch is not None:
                    batch.keep(i, o)
                continue
            drop.append(i)
            counts[rule] = counts.get(rule, 0) + 1
            self.cluster_extra[first] = self.cluster_extra.get(first, 0) + 1
            self.records.append({"of": first})
            if st.keep_rows:
                rows.append({"id": ids[i], "rule": rule, "value": value, "threshold": st.threshold if rule ==
                             RULE_NEAR else None, "duplicate_of": self.index.get(b"i" + _ordinal(first))})
        if batch is not None:
            batch.index(self.bands)
        self.index.fit()
        return {"drop": drop, "rows": rows, "counts": counts}

    def _near(self, candidates: list[int], sim: bytes) -> tuple[int | None, float]:
        """The earliest candidate (with a threshold: the earliest similar enough) and the similarity: Jaccard of
        the shingle sets with a threshold, else the signatures' estimate (1.0 when none is kept)."""
        for o in candidates:
            if not sim:
                return o, 1.0
            other = self.index.get(b"s" + _ordinal(o))
            if self.settings.shingle_sets:
                similarity = jaccard(sim, other)
            else:
                similarity = float(np.mean(np.frombuffer(sim, np.uint32) == np.frombuffer(other, np.uint32)))
            if self.settings.threshold is None or similarity >= self.settings.threshold:
                return o, similarity
        return None, 0.0

    def _keep(self, key: bytes, doc_bands: bytes, sim: bytes, doc_id: str, record: bool = True) -> int:
        o = self.kept
        self.kept += 1
        if self.settings.keep_rows:
            self.index.add(b"i" + _ordinal(o), doc_id)
        if key:
            self.index.add(b"e" + key, o)
        if sim:
            self.index.add(b"s" + _ordinal(o), sim)
        if record:
            self.records.append({"k": key.hex(), "b": doc_bands.hex(), "s": sim.hex(), "id": doc_id})
        return o

    def take_records(self) -> list[dict]:
        records, self.records = self.records, []
        return records

    def load(self, path: str | os.PathLike, committed: int) -> None:
        """Rebuild the index from the first `committed` bytes of INDEX_FILE (a resumed run); the band keys go
        to the band index in batches, as `decide` adds them."""
        if not committed:
            return
        with open(path, "rb") as f:
            lines = f.read(committed).decode("utf-8").splitlines()
        rows: list[bytes] = []
        ords: list[int] = []
        for line in lines:
            record = json.loads(line)
            if "of" in record:
                self.cluster_extra[record["of"]] = self.cluster_extra.get(record["of"], 0) + 1
                continue
            doc_bands = bytes.fromhex(record["b"])
            o = self._keep(bytes.fromhex(record["k"]), doc_bands, bytes.fromhex(record["s"]), record["id"],
                           record=False)
            self.index.fit()
            if doc_bands.strip(b"\0"):
                rows.append(doc_bands)
                ords.append(o)
            if len(rows) == _LOAD_BATCH:
                self._load_bands(rows, ords)
                rows, ords = [], []
        self._load_bands(rows, ords)

    def _load_bands(self, rows: list[bytes], ords: list[int]) -> None:
        if rows:
            keys = np.frombuffer(b"".join(rows), np.uint64).reshape(len(rows), self.settings.bands)
            index_bands(self.bands, keys, np.array(ords, np.int64), self.bands.lookup(keys))

    def summary(self, filtered_by: dict[str, int]) -> dict:
        """The manifest's `dedup` section: removed per method, clusters (a kept document and its duplicates)."""
        sizes: dict[int, int] = {}
        for extra in self.cluster_extra.values():
            sizes[extra + 1] = sizes.get(extra + 1, 0) + 1
        return {
            "exact_removed": filtered_by.get(RULE_EXACT, 0),
            "near_removed": filtered_by.get(RULE_NEAR, 0),
            "clusters": len(self.cluster_extra),
            "largest_cluster": max(sizes, default=0),
            "cluster_sizes": {str(size): sizes[size] for size in sorted(sizes)},
            "indexed_documents": self.kept,
            "spilled": self.index.spilled or (self.bands is not None and self.bands.spilled),
        }

    def close(self) -> None:
        self.index.close()
        if self.bands is not None:
            self.bands.close()


def _similarity_data(st: DedupSettings, stats: dict) -> list[bytes]:
    """Per document, what a similarity is computed from (shingle set or signature); [] when none is kept."""
    if st.shingle_sets:
        return unpack_sets(stats.get("dedup_shingles", b""))
    sigs, size = stats.get("dedup_sigs", b""), st.num_perm * 4
    return [sigs[i:i + size] for i in range(0, len(sigs), size)]


def dedup_settings(config) -> DedupSettings | None:
    """The writer's settings for a pipeline; None when deduplication is off (then it costs nothing)."""
    settings = DedupSettings(exact=config.dedup_exact, near=config.dedup_near, memory=config.dedup_memory,
                             keep_rows=config.keep_filtered, ngram=config.dedup_ngram,
                             num_perm=config.dedup_num_perm, bands=config.dedup_bands, rows=config.dedup_rows,
                             threshold=config.dedup_threshold)
    return settings if settings.on else None


def check_dedup(config) -> None:
    """Near-dedup settings that cannot work fail before any work, in one line."""
    for name in ("dedup_ngram", "dedup_num_perm", "dedup_bands", "dedup_rows"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"[dedup] {name.removeprefix('dedup_')} must be a whole number of at least 1, not "
                            f"{value!r}")
    if config.dedup_bands > 255:
        raise UserError(f"[dedup] bands must be at most 255, not {config.dedup_bands}")
    if config.dedup_num_perm < config.dedup_bands * config.dedup_rows:
        raise UserError(f"[dedup] num_perm {config.dedup_num_perm} is fewer than bands x rows = "
                        f"{config.dedup_bands * config.dedup_rows}")
    t = config.dedup_threshold
    if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1):
        raise UserError(f"[dedup] threshold must be a number in (0, 1], not {t!r}")
