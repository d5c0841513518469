"""Exact deduplication: keys computed in the workers, decisions taken in seq order where order is known.

A worker gives every document it keeps a 24-byte key: its `content_hash` (BLAKE2b-64 of the text with
whitespace runs made one space, the ends stripped) followed by a second, independent BLAKE2b-128 of the same
normalised text (another `person`). The writer, which sees the documents in seq order, removes a document
whose key equals that of an earlier kept one. Two documents with equal `content_hash` but different texts
differ in the second digest (a chance of 2**-128), so a 64-bit collision never removes a distinct document,
and no text is held to compare: only the keys, and the id of the first document of each.

The index lives in a dict below its memory budget; past it, the dict is moved into an sqlite table on disk
(the standard library's embedded store) and the run goes on. Every committed shard's index records (kept
keys, and one line per removed duplicate) are appended to `_dedup.jsonl`, whose committed length the journal
records, so `--resume` rebuilds the same index and takes the same decisions as an uninterrupted run.
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

from prep.errors import UserError

KEY_BYTES = 24  # content_hash (8, little-endian as the feature) + independent digest (16)
_PERSON = b"prep-dedup-v1"
_ENTRY_OVERHEAD = 104  # a dict slot (amortised over resizes) beside the key and id objects
INDEX_FILE = "_dedup.jsonl"  # committed shards' index records; the journal gives its committed length
RULE_EXACT = "dedup_exact"


@dataclass(frozen=True)
class DedupSettings:
    """What the writer needs: the methods on, and the memory budget of the index."""

    exact: bool = False
    memory: int = 2 * 2**30
    keep_rows: bool = False  # --keep-filtered: each removed document's id, the id it duplicates, similarity

    @property
    def on(self) -> bool:
        return self.exact


def parse_methods(value: str) -> list[str]:
    """`--dedup exact`, `--dedup exact,near`, `--dedup off` -> the methods on."""
    methods = [m.strip() for m in value.split(",") if m.strip()]
    if methods == ["off"]:
        return []
    bad = [m for m in methods if m not in ("exact",)]
    if bad or not methods:
        raise UserError(f"bad --dedup {value!r}: use exact, or off")
    return methods


def dedup_keys(texts: pa.Array) -> np.ndarray:
    """(n, 24) uint8: each text's content_hash then its independent 128-bit digest (normalised text)."""
    keys = bytearray()
    for text in texts.to_pylist():
        data = " ".join((text or "").split()).encode("utf-8", "surrogatepass")
        keys += hashlib.blake2b(data, digest_size=8).digest()
        keys += hashlib.blake2b(data, digest_size=16, person=_PERSON).digest()
    return np.frombuffer(bytes(keys), np.uint8).reshape(-1, KEY_BYTES)


class ExactIndex:
    """key -> id of the first kept document with it; in memory up to a budget, then in sqlite on disk."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.mem: dict[bytes, str] = {}
        self.mem_bytes = 0
        self.entries = 0
        self.db: sqlite3.Connection | None = None
        self._spill_dir: tempfile.TemporaryDirectory | None = None

    def get(self, key: bytes) -> str | None:
        found = self.mem.get(key)
        if found is None and self.db is not None:
            row = self.db.execute("SELECT id FROM idx WHERE k = ?", (key,)).fetchone()
            found = row[0] if row else None
        return found

    def add(self, key: bytes, doc_id: str) -> None:
        self.mem[key] = doc_id
        self.entries += 1
        self.mem_bytes += sys.getsizeof(key) + sys.getsizeof(doc_id) + _ENTRY_OVERHEAD
        if self.mem_bytes > self.memory:
            self.spill()

    def spill(self) -> None:
        """Move the in-memory entries to the on-disk table (made on the first spill)."""
        if self.db is None:
            self._spill_dir = tempfile.TemporaryDirectory(prefix="prep-dedup-")
            self.db = sqlite3.connect(os.path.join(self._spill_dir.name, "index.sqlite"))
            self.db.execute("PRAGMA journal_mode = OFF")
            self.db.execute("PRAGMA synchronous = OFF")
            self.db.execute("CREATE TABLE idx (k BLOB PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID")
        self.db.executemany("INSERT INTO idx VALUES (?, ?)", self.mem.items())
        self.db.commit()
        self.mem.clear()
        self.mem_bytes = 0

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


class Deduper:
    """The decisions, in the order documents are offered (the writer offers them in seq order)."""

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.exact = ExactIndex(settings.memory)
        self.cluster_extra: dict[bytes, int] = {}  # key of a kept document -> duplicates removed for it
        self.records: list[dict] = []  # index records since the last commit (for INDEX_FILE)

    def decide(self, keys: bytes, ids: list) -> dict:
        """The decision for documents offered in order: {"drop": their positions, "rows": filtered rows {id, rule,
        value, threshold, duplicate_of} if asked, "counts": removed per rule}. A plain dict: the Ray driver
        decides and sends it to the writer that applies it."""
        n = len(ids)
        if len(keys) != n * KEY_BYTES:
            raise RuntimeError(f"dedup: {len(keys)} key bytes for {n} documents")
        drop, rows = [], []
        for i in range(n):
            key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]
            doc_id = str(ids[i])
            first = self.exact.get(key)
            if first is None:
                self.exact.add(key, doc_id)
                self.records.append({"k": key.hex(), "id": doc_id})
                continue
            drop.append(i)
            self.cluster_extra[key] = self.cluster_extra.get(key, 0) + 1
            self.records.append({"k": key.hex(), "of": first})
            if self.settings.keep_rows:
                rows.append({"id": ids[i], "rule": RULE_EXACT, "value": 1.0, "threshold": None,
                             "duplicate_of": first})
        return {"drop": drop, "rows": rows, "counts": {RULE_EXACT: len(drop)} if drop else {}}

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
            key = bytes.fromhex(record["k"])
            if "of" in record:
                self.cluster_extra[key] = self.cluster_extra.get(key, 0) + 1
            else:
                self.exact.add(key, record["id"])

    def summary(self, filtered_by: dict[str, int]) -> dict:
        """The manifest's `dedup` section: removed per method, clusters (a kept document and its duplicates)."""
        sizes: dict[int, int] = {}
        for extra in self.cluster_extra.values():
            sizes[extra + 1] = sizes.get(extra + 1, 0) + 1
        return {
            "exact_removed": filtered_by.get(RULE_EXACT, 0),
            "near_removed": 0,
            "clusters": len(self.cluster_extra),
            "largest_cluster": max(sizes, default=0),
            "cluster_sizes": {str(size): sizes[size] for size in sorted(sizes)},
            "index_entries": self.exact.entries,
            "spilled": self.exact.spilled,
        }

    def close(self) -> None:
        self.exact.close()


def dedup_settings(config) -> DedupSettings | None:
    """The writer's settings for a pipeline; None when deduplication is off (then it costs nothing)."""
    settings = DedupSettings(exact=config.dedup_exact, memory=config.dedup_memory, keep_rows=config.keep_filtered)
    return settings if settings.on else None
