"""Deduplication, exact and near: keys computed in the workers, decisions taken in seq order where order is known.

Exact: a worker gives every document it keeps a 24-byte key: its `content_hash` (BLAKE2b-64 of the text with
whitespace runs made one space, the ends stripped) followed by a second, independent BLAKE2b-128 of the same
normalised text (another `person`). A document whose key equals that of an earlier kept one is removed. Two
documents with equal `content_hash` but different texts differ in the second digest (a chance of 2**-128), so a
64-bit collision never removes a distinct document, and no text is held to compare.

Near: MinHash signatures of lower-cased word n-gram shingles, vectorised with numpy over the batch, cut into
bands x rows; a document sharing a band hash with an earlier kept document is a near duplicate of the earliest
(with a threshold: of the earliest whose estimated Jaccard similarity reaches it).

The decisions are taken by `Deduper`, fed in seq order by the writer (or by the Ray driver). Its index lives in
a dict below its memory budget; past it, the entries move into an sqlite table on disk (the standard library's
embedded store) and the run goes on. Every committed shard's index records are appended to `_dedup.jsonl`,
whose committed length the journal records, so `--resume` rebuilds the same index and takes the same decisions
as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError

KEY_BYTES = 24  # content_hash (8, little-endian as the feature) + independent digest (16)
_PERSON = b"prep-dedup-v1"
_ENTRY_OVERHEAD = 104  # a dict slot (amortised over resizes) beside the key and id objects
INDEX_FILE = "_dedup.jsonl"  # committed shards' index records; the journal gives its committed length
RULE_EXACT = "dedup_exact"
RULE_NEAR = "dedup_near"


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
    threshold: float | None = None  # near: a candidate must also have this estimated Jaccard similarity

    @property
    def on(self) -> bool:
        return self.exact or self.near

    @property
    def signatures(self) -> bool:
        """Whether the signatures themselves are kept (for a similarity: a threshold, or --keep-filtered)."""
        return self.near and (self.threshold is not None or self.keep_rows)


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
    """(n, 24) uint8: each text's content_hash then its independent 128-bit digest (normalised text)."""
    keys = bytearray()
    for text in texts.to_pylist():
        data = " ".join((text or "").split()).encode("utf-8", "surrogatepass")
        keys += hashlib.blake2b(data, digest_size=8).digest()
        keys += hashlib.blake2b(data, digest_size=16, person=_PERSON).digest()
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
    words = words.cast(pa.large_string())
    offsets = np.frombuffer(words.buffers()[1], np.int64)[words.offset:words.offset + len(words) + 1]
    data = np.frombuffer(words.buffers()[2] or b"", np.uint8)
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

    def signatures(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """((n, num_perm) uint32 signatures, (n,) bool: has words). A text with fewer than `ngram` words is one
        shingle of all of them; one with none has no signature (all ones) and is never a candidate."""
        with np.errstate(over="ignore"):
            words = pc.utf8_split_whitespace(pc.utf8_lower(texts.fill_null("")))
            counts = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
            wh = _word_hashes(pc.list_flatten(words))
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
            sig = np.full((len(counts), self.num_perm), np.iinfo(np.uint32).max, np.uint32)
            has = spans > 0
            if len(shingle):
                rng = np.random.default_rng(self.seed)
                a = rng.integers(1, 2**63, self.num_perm, dtype=np.uint64) | np.uint64(1)
                b = rng.integers(0, 2**63, self.num_perm, dtype=np.uint64)
                seg = (np.cumsum(spans) - spans)[has]
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


class Deduper:
    """The decisions, in the order documents are offered (the writer offers them in seq order).

    Every kept document gets an ordinal; the index maps `e`+exact key, and `b`+band+band key, to the ordinal
    of the first kept document with it, `i`+ordinal to its id and (when a similarity is needed) `s`+ordinal to
    its signature."""

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.index = Index(settings.memory)
        self.kept = 0
        self.cluster_extra: dict[int, int] = {}  # ordinal of a kept document -> duplicates removed for it
        self.records: list[dict] = []  # index records since the last commit (for INDEX_FILE)

    def decide(self, keys: bytes, ids: list, bands: bytes = b"", sigs: bytes = b"") -> dict:
        """The decision for documents offered in order: {"drop": their positions, "rows": filtered rows {id, rule,
        value, threshold, duplicate_of} if asked, "counts": removed per rule}. A plain dict: the Ray driver
        decides and sends it to the writer that applies it."""
        st, n = self.settings, len(ids)
        nb, sig_bytes = st.bands * 8, st.num_perm * 4
        if (st.exact and len(keys) != n * KEY_BYTES) or (st.near and len(bands) != n * nb):
            raise RuntimeError(f"dedup: {len(keys)} key and {len(bands)} band bytes for {n} documents")
        drop, rows, counts = [], [], {}
        if self.index.spilled:
            wanted = [b"e" + keys[i * KEY_BYTES:(i + 1) * KEY_BYTES] for i in range(n)] if st.exact else []
            if st.near:
                wanted += [b"b" + bytes([j % st.bands]) + bands[j * 8:(j + 1) * 8] for j in range(n * st.bands)]
            self.index.prefetch(wanted)
        for i in range(n):
            key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES] if st.exact else b""
            doc_bands = bands[i * nb:(i + 1) * nb] if st.near else b""
            sig = sigs[i * sig_bytes:(i + 1) * sig_bytes] if sigs else b""
            first, rule, value = None, None, 1.0
            if st.exact:
                first, rule = self.index.get(b"e" + key), RULE_EXACT
            if first is None and doc_bands:
                first, value = self._near(doc_bands, sig)
                rule = RULE_NEAR
            if first is None:
                self._keep(key, doc_bands, sig, str(ids[i]))
                continue
            drop.append(i)
            counts[rule] = counts.get(rule, 0) + 1
            self.cluster_extra[first] = self.cluster_extra.get(first, 0) + 1
            self.records.append({"of": first})
            if st.keep_rows:
                rows.append({"id": ids[i], "rule": rule, "value": value, "threshold": st.threshold if rule ==
                             RULE_NEAR else None, "duplicate_of": self.index.get(b"i" + _ordinal(first))})
        self.index.fit()
        return {"drop": drop, "rows": rows, "counts": counts}

    def _near(self, doc_bands: bytes, sig: bytes) -> tuple[int | None, float]:
        """The earliest kept document sharing a band (and, with a threshold, similar enough), and the estimated
        Jaccard similarity; (None, 0) when there is none. A document without words has no bands (all zero)."""
        if doc_bands == bytes(len(doc_bands)):
            return None, 0.0
        found = set()
        for band in range(self.settings.bands):
            o = self.index.get(b"b" + bytes([band]) + doc_bands[band * 8:(band + 1) * 8])
            if o is not None:
                found.add(o)
        for o in sorted(found):
            similarity = self._similarity(o, sig) if sig else 1.0
            if self.settings.threshold is None or similarity >= self.settings.threshold:
                return o, similarity
        return None, 0.0

    def _similarity(self, o: int, sig: bytes) -> float:
        other = self.index.get(b"s" + _ordinal(o))
        a, b = np.frombuffer(sig, np.uint32), np.frombuffer(other, np.uint32)
        return float(np.mean(a == b))

    def _keep(self, key: bytes, doc_bands: bytes, sig: bytes, doc_id: str, record: bool = True) -> None:
        o = self.kept
        self.kept += 1
        self.index.add(b"i" + _ordinal(o), doc_id)
        if key:
            self.index.add(b"e" + key, o)
        if doc_bands and doc_bands != bytes(len(doc_bands)):
            for band in range(self.settings.bands):
                band_key = b"b" + bytes([band]) + doc_bands[band * 8:(band + 1) * 8]
                if self.index.get(band_key) is None:
                    self.index.add(band_key, o)
        if sig:
            self.index.add(b"s" + _ordinal(o), sig)
        if record:
            self.records.append({"k": key.hex(), "b": doc_bands.hex(), "s": sig.hex(), "id": doc_id})

    def take_records(self) -> list[dict]:
        records, self.records = self.records, []
        return records

    def load(self, path: str | os.PathLike, committed: int) -> None:
        """Rebuild the index from the first `committed` bytes of INDEX_FILE (a resumed run)."""
        if not committed:
            return
        with open(path, "rb") as f:
            lines = f.read(committed).decode("utf-8").splitlines()
        for line in lines:
            record = json.loads(line)
            if "of" in record:
                self.cluster_extra[record["of"]] = self.cluster_extra.get(record["of"], 0) + 1
            else:
                self._keep(bytes.fromhex(record["k"]), bytes.fromhex(record["b"]), bytes.fromhex(record["s"]),
                           record["id"], record=False)
                self.index.fit()

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
            "spilled": self.index.spilled,
        }

    def close(self) -> None:
        self.index.close()


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
