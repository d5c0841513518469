"""The writer: re-order outputs by chunk seq and write shards atomically.

Shard boundaries depend only on the chunks' input text bytes and their seq, so the
files are the same whatever worker computed what (or in how many pieces: a shard's
rows are laid out afresh before they are written). Every committed shard is
appended to `_journal.jsonl` (which `--resume` reads), after its quarantined records
were appended to `_quarantine.jsonl.partial`; the journal line records that file's
length, so a resumed run cuts off what was not committed. `_manifest.json` is written
last, so its presence means the run finished.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prep.core.dedup import INDEX_FILE, Deduper, DedupSettings
from prep.io.trainer_formats import OutputSpec, ShardFiles, packing_summary
from prep.text.arrow import arrow_of

JOURNAL = "_journal.jsonl"
MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.jsonl"
QUARANTINE_PARTIAL = QUARANTINE + ".partial"  # committed shards' records, while the run goes on
FILTERED = "_filtered.parquet"  # --keep-filtered: id, rule, value, threshold of each filtered document
FILTERED_PARTIAL = "_filtered.jsonl.partial"  # committed shards' filtered documents, while the run goes on
ROUTING = "_routing.parquet"
MAX_SEALING = 4  # ended shards waiting for the sealer thread, each holding up to a few row groups, at most
ROW_GROUP_BYTES = 16 * 2**20  # a row group of ~16 MiB in memory: sensible for readers, small for the writer


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp name, fsync, rename: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_journal(out: Path, entry: dict) -> None:
    """One line, flushed to disk before anything relies on it."""
    with open(out / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
        journal.flush()
        os.fsync(journal.fileno())


def read_journal(out: Path) -> tuple[dict | None, list[dict]]:
    """(header, committed shard entries); a torn last line (killed mid-append) is ignored."""
    path = out / JOURNAL
    if not path.exists():
        return None, []
    header, entries = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if "fingerprint" in record:
            header = record
        else:
            entries.append(record)
    return header, entries


@dataclass
class _Pending:
    """A chunk seen by the writer: its input facts and the output parts received so far."""

    info: dict | None = None
    parts: list = field(default_factory=list)  # (start, stop, table | None, stats)
    covered: int = 0


@dataclass
class _Closing:
    """An ended shard on its way to the journal: its entry, its files being sealed, its dedup index records."""

    entry: dict
    sealed: Future | None  # -> (ShardFiles.seal's files, packing); None: a shard without rows
    dedup_records: list


def _seal(files: ShardFiles, last_write: Future | None) -> tuple[list[tuple], dict | None]:
    if last_write is not None:
        last_write.result()
    return files.seal()


class ShardWriter:
    """In-process core of the writer (the process loop below feeds it)."""

    def __init__(self, out: Path, shard_bytes: int, compression: str, start_seq: int, entries: list[dict],
                 before_commit: Callable[[], None] | None = None, formats: OutputSpec | None = None,
                 dedup: DedupSettings | None = None, encoder_threads: int = 1):
        self.out, self.shard_bytes, self.compression = out, shard_bytes, compression
        self.formats = formats or OutputSpec()
        self.entries = list(entries)
        self.next_seq = start_seq
        self.shard_index = sum(1 for e in entries if e.get("files") or e["file"])  # gapless: no rows, no file
        self.pending: dict[int, _Pending] = {}
        self.before_commit = before_commit or (lambda: None)
        self.quarantine_bytes = entries[-1].get("quarantine_bytes", 0) if entries else 0
        self.filtered_bytes = entries[-1].get("filtered_bytes", 0) if entries else 0
        self.dedup_bytes = entries[-1].get("dedup_bytes", 0) if entries else 0
        self.deduper: Deduper | None = None
        self.deduped = False  # a part had dedup applied: tokens are counted from the rows kept
        self._encoder: ThreadPoolExecutor | None = None
        self._encoding: Future | None = None
        self.encoder_threads = max(1, encoder_threads)  # Parquet row groups encoded at once (parquet_join.py)
        self._row_group_encoders: ThreadPoolExecutor | None = None
        self._sealer: ThreadPoolExecutor | None = None  # finishes ended shards' files (fsync, checksum), in order
        self.closing: deque[_Closing] = deque()  # ended shards, not yet committed: committed in this order
        if dedup is not None:  # the index of the committed shards, as an uninterrupted run would hold it
            self.deduper = Deduper(dedup)
            self.deduper.load(out / INDEX_FILE, self.dedup_bytes)
        self._reset_shard()

    def _reset_shard(self) -> None:
        self.files: ShardFiles | None = None  # opened with the shard's first rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.weight = 0  # the chunks' input weights: a shard ends once they reach shard_bytes
        self.current = {
            "rows": 0, "tokens": 0, "text_bytes": 0, "documents_in": 0, "quarantined": 0,
            "filtered": 0, "filtered_by": {}, "filter_skipped": {}, "first_seq": self.next_seq, "last_seq": None,
            "quarantine": [], "filtered_rows": [], "chunks": [],
        }

    def add_chunk(self, seq: int, info: dict) -> list[dict]:
        self._pending(seq).info = info
        return self._drain()

    def add_part(self, seq: int, start: int, stop: int, table: pa.Table | None, stats: dict) -> list[dict]:
        pending = self._pending(seq)
        if any(p[0] == start for p in pending.parts):
            return []  # a duplicate (a worker died after its result arrived): ignore it
        pending.parts.append((start, stop, table, stats))
        pending.covered += stop - start
        return self._drain()

    def _pending(self, seq: int) -> _Pending:
        if seq < self.next_seq:
            raise RuntimeError(f"writer got seq {seq} after it was written")
        return self.pending.setdefault(seq, _Pending())

    def _drain(self) -> list[dict]:
        """Write every chunk that is complete and next in order; return the shards committed."""
        committed = []
        while True:
            pending = self.pending.get(self.next_seq)
            if pending is None or pending.info is None or pending.covered < pending.info["rows"]:
                return committed + self._publish(wait=False)
            del self.pending[self.next_seq]
            self._append(self.next_seq, pending)
            self.next_seq += 1
            if self.weight >= self.shard_bytes:
                self._close()
                if len(self.closing) > MAX_SEALING:  # the sealer is behind (a slow disk): memory stays bounded
                    committed += self._publish(wait=True)

    def _append(self, seq: int, pending: _Pending) -> None:
        cur, info = self.current, pending.info
        cur["last_seq"] = seq
        cur["text_bytes"] += info["text_bytes"]
        self.weight += info.get("weight", info["text_bytes"])
        cur["documents_in"] += info["documents_in"]
        quarantine = list(info["quarantine"])
        cur["chunks"].append([seq, info.get("source"), info.get("digest")])  # what --resume proves it skips
        duplicates: list[dict] = []  # after the chunk's other filtered rows, however it was cut into parts
        tables = []  # the chunk's rows, part by part
        for _start, _stop, table, stats in sorted(pending.parts, key=lambda p: p[0]):
            if table is not None and table.num_rows and (self.deduper is not None or "dedup" in stats):
                table, removed = self._dedup(table, stats)
                duplicates += removed
            cur["filtered"] += stats.get("filtered", 0)
            cur["documents_in"] += stats.get("in_documents", 0)  # a raw chunk's records, parsed by the workers
            cur["text_bytes"] += stats.get("in_text_bytes", 0)
            _add_counts(cur["filtered_by"], stats.get("filtered_by", {}))
            _add_counts(cur["filter_skipped"], stats.get("filter_skipped", {}))
            cur["filtered_rows"].extend(stats.get("filtered_rows", []))
            quarantine += stats.get("quarantine", [])
            if table is not None and table.num_rows:
                cur["rows"] += table.num_rows
                cur["tokens"] += _tokens(table) if self.deduped else stats.get("tokens", 0)
                tables.append(table)
        if tables:
            # The chunk's rows as one piece per column (a chunk computed in parts, e.g. retried after a fault, is
            # put together here): a row group is written chunk by chunk, and its pages depend on where its
            # pieces end, which is then where the input's chunks end, however the chunks were computed.
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
            if any(column.num_chunks != 1 for column in table.columns):
                table = table.combine_chunks()
            self.buffer.append(table)
            self.buffered += table.nbytes
        cur["filtered_rows"].extend(duplicates)
        # In input order: the Source's bad records and the stage's poison documents, by line or row (stable, so a
        # group of .txt files, all at position 0, keeps the Source's order, then the stage's).
        cur["quarantine"] += sorted(quarantine, key=lambda q: q["position"])
        cur["quarantined"] = len(cur["quarantine"])
        if self.buffered >= ROW_GROUP_BYTES:
            self._flush()

    def _dedup(self, table: pa.Table, stats: dict) -> tuple[pa.Table, list[dict]]:
        """The part's rows less the duplicates of earlier documents (counted as filtered), decided here in seq
        order, or by the Ray driver (also in seq order) when the stats carry its decision."""
        self.deduped = True
        decision = stats.get("dedup")
        if decision is None:
            decision = self.deduper.decide(table.column("id").to_pylist(), stats)
        for rule, count in decision["counts"].items():
            self.current["filtered"] += count
            self.current["filtered_by"][rule] = self.current["filtered_by"].get(rule, 0) + count
        if not decision["drop"]:
            return table, decision["rows"]
        keep = np.ones(table.num_rows, bool)
        keep[decision["drop"]] = False
        return table.filter(pa.array(keep)), decision["rows"]

    def _flush(self) -> None:
        if not self.buffer:
            return
        # One piece per input chunk, not copied into one: Parquet pages depend on how a table is cut, and the
        # chunks' boundaries depend on the input only (see _append). Written piece by piece, the encoder's
        # buffers (levels, pages) are a chunk's size, not a row group's.
        table = pa.concat_tables(self.buffer)
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prep-encode")
            self._row_group_encoders = ThreadPoolExecutor(self.encoder_threads, thread_name_prefix="prep-row-group")
        if self.files is None:
            self.files = ShardFiles(self.formats, self.out, self.shard_index, self.compression,
                                    self._row_group_encoders, self.encoder_threads)
        # Every format asked for, in one pass, in a thread (pyarrow releases the GIL) while this one takes the next
        # results in: one table at a time, in order, so at most one more is held. Its Parquet row groups are
        # encoded by `encoder_threads` threads at once, and written in order.
        self._wait_encoding()
        self._encoding = self._encoder.submit(self.files.write, table)
        self.buffer, self.buffered = [], 0

    def _wait_encoding(self) -> None:
        """The row group being encoded is written (its error, e.g. a full disk, is raised here)."""
        if self._encoding is not None:
            encoding, self._encoding = self._encoding, None
            encoding.result()

    def commit(self) -> list[dict]:
        """End the current shard, if it has rows, and commit every ended shard; returns their journal entries."""
        if self.current["last_seq"] is not None:
            self._close()
        return self._publish(wait=True)

    def _close(self) -> None:
        """End the current shard. Its last rows go to the encoders and its files are sealed (the rest of their
        encoding, fsync, checksum) in a thread, while this one takes the next shard's results in (fsync and checksum
        of a 100 MB file take ~0.12 s on the 2-core machine: every result waited that long at each shard's end).
        `_publish` commits it once sealed, in shard order."""
        self._flush()
        entry = dict(self.current, shard=self.shard_index, file=None, sha256=None, bytes=0, files=[])
        sealed = None
        if self.files is not None:
            if self._sealer is None:
                self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prep-seal")
            sealed = self._sealer.submit(_seal, self.files, self._encoding)
            self._encoding = None  # the sealer waits for it; the next shard's writes queue behind it anyway
            self.shard_index += 1
        records = self.deduper.take_records() if self.deduper is not None else []  # this shard's, in seq order
        self.closing.append(_Closing(entry, sealed, records))
        self._reset_shard()

    def _publish(self, wait: bool) -> list[dict]:
        """Commit the ended shards that are sealed (`wait`: all of them), in order: rename the files, then their bad
        records, filtered documents and dedup index, then one journal line that lists every file (`file`, `sha256`,
        `bytes`: the Parquet one's)."""
        committed = []
        while self.closing and (wait or self.closing[0].sealed is None or self.closing[0].sealed.done()):
            closing = self.closing.popleft()
            entry = closing.entry
            sealed, packing = closing.sealed.result() if closing.sealed is not None else ([], None)
            self.before_commit()
            if sealed:
                entry["files"] = ShardFiles.publish(sealed)
                fsync_dir(self.out)
                for f in entry["files"]:
                    if f["format"] == "parquet":
                        entry.update(file=f["file"], sha256=f["sha256"], bytes=f["bytes"])
                if packing is not None:
                    entry["packing"] = packing
            quarantine = entry.pop("quarantine")
            self.quarantine_bytes = append_records(self.out / QUARANTINE_PARTIAL, self.quarantine_bytes, quarantine)
            entry["quarantine_bytes"] = self.quarantine_bytes
            self.filtered_bytes = append_records(self.out / FILTERED_PARTIAL, self.filtered_bytes,
                                                 entry.pop("filtered_rows"))
            entry["filtered_bytes"] = self.filtered_bytes
            if self.deduper is not None:
                self.dedup_bytes = append_records(self.out / INDEX_FILE, self.dedup_bytes, closing.dedup_records)
                entry["dedup_bytes"] = self.dedup_bytes
            append_journal(self.out, entry)
            self.entries.append(entry)
            committed.append(entry)
        return committed

    def finish(self, extra: dict, routing_rows: dict | None) -> dict:
        """Commit the last shard, then quarantine, routing table and, last, the manifest."""
        if self.pending:
            raise RuntimeError(f"writer finished with chunks missing: seqs {sorted(self.pending)[:5]} ...")
        self.commit()
        entries = self.entries
        counts = {
            "documents_in": sum(e["documents_in"] for e in entries),
            "documents_out": sum(e["rows"] for e in entries),
            "quarantined": sum(e["quarantined"] for e in entries),
            "filtered": sum(e["filtered"] for e in entries),
            "filtered_by": _sum_counts(e.get("filtered_by", {}) for e in entries),
            "filter_skipped": _sum_counts(e.get("filter_skipped", {}) for e in entries),
            "tokens": sum(e["tokens"] for e in entries),
            "bytes_in": sum(e["text_bytes"] for e in entries),
        }
        check_accounting(counts)  # before anything says the run finished
        partial, qpath = self.out / QUARANTINE_PARTIAL, self.out / QUARANTINE
        if self.quarantine_bytes:
            with open(partial, "rb+") as f:
                f.truncate(self.quarantine_bytes)
                os.fsync(f.fileno())
            os.replace(partial, qpath)
        else:
            partial.unlink(missing_ok=True)
            qpath.unlink(missing_ok=True)
        fpartial = self.out / FILTERED_PARTIAL
        if self.filtered_bytes:
            _write_filtered(fpartial, self.filtered_bytes, self.out / FILTERED)
        if routing_rows is not None:
            tmp = self.out / f".{ROUTING}.tmp"
            pq.write_table(_routing_table(routing_rows), tmp, compression="zstd")
            os.replace(tmp, self.out / ROUTING)
        shards = [
            {k: e[k] for k in ("file", "rows", "tokens", "sha256", "bytes", "first_seq", "last_seq", "files")}
            for e in entries
            if e["files"]
        ]
        manifest = {"version": 1, **extra, "counts": counts, "shards": shards}
        if self.deduper is not None:
            manifest["dedup"] = self.deduper.summary(counts["filtered_by"])
            self.deduper.close()
        if packed := [e["packing"] for e in entries if e.get("packing")]:
            manifest["packing"] = packing_summary(packed)
        manifest["timings"] = dict(manifest.get("timings", {}))
        write_atomic(self.out / MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
        for pool in (self._encoder, self._row_group_encoders, self._sealer):
            if pool is not None:
                pool.shutdown()
        fpartial.unlink(missing_ok=True)  # after the manifest: until then, --resume rebuilds from it
        return manifest


def _routing_table(rows: dict[str, list]) -> pa.Table:
    """The routing rows (numbers only) as a table, built from numpy buffers: pa.table of Python lists would
    import pandas (~0.4 s) at the very end of the run."""
    columns = {}
    for name, values in rows.items():
        array = np.asarray(values, np.float64 if any(isinstance(v, float) for v in values) else np.int64)
        columns[name] = arrow_of(array, pa.float64() if array.dtype == np.float64 else pa.int64())
    return pa.table(columns)


def check_accounting(counts: dict) -> None:
    """Every record in exactly one place: written, quarantined or filtered."""
    accounted = counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    if counts["documents_in"] != accounted:
        raise RuntimeError(f"accounting mismatch: documents_in {counts['documents_in']} != out + quarantined + "
                           f"filtered = {accounted} ({json.dumps(counts)})")


def _tokens(table: pa.Table) -> int:
    """Tokens of a document table (num_tokens is always a column)."""
    return int(pc.sum(table.column("num_tokens")).as_py() or 0)


def _add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count


def _sum_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Per-rule counts of all shards, keys sorted (so the manifest does not depend on arrival order)."""
    total: dict[str, int] = {}
    for d in dicts:
        _add_counts(total, d)
    return dict(sorted(total.items()))


def append_records(path: Path, committed: int, records: list[dict]) -> int:
    """Append JSON lines after the first `committed` bytes; the new committed length."""
    return append_bytes(path, committed, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


def append_bytes(path: Path, committed: int, data: bytes) -> int:
    """Append after the first `committed` bytes (an append that failed half-way leaves no half record), on
    disk before it returns; the new committed length."""
    if not data:
        return committed
    with open(path, "ab") as f:
        f.truncate(committed)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def _write_filtered(partial: Path, committed: int, final: Path) -> None:
    """The filtered documents of the committed shards, as Parquet (id, rule, value, threshold, and with dedup
    duplicate_of; value is then the similarity)."""
    with open(partial, "rb") as f:
        lines = f.read(committed).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    fields = [("rule", pa.string()), ("value", pa.float64()), ("threshold", pa.float64())]
    if any("duplicate_of" in r for r in rows):  # dedup: the kept document each removed one duplicates
        fields.append(("duplicate_of", pa.string()))
    schema = pa.schema(fields)
    ids = pa.array([r["id"] for r in rows])
    table = pa.Table.from_pylist(rows, schema=schema).add_column(0, "id", ids)
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, final)
