"""Proofs that --resume and `prep inspect` rely on: the input is the one committed, the shards are intact.

A resumed run skips the input its journal says was committed. Before it skips a chunk it checks that the
chunk's content digest (xxh3-64 over what the coordinator holds of it, and its bad records: the records'
bytes of a JSON Lines or CSV chunk, the proof of a Parquet or dataset piece — its row groups' stored bytes, its
text sizes — the names and sizes of a run of .txt files) equals the one journalled when the chunk was
committed; before it reads at all, that every input file has the size and mtime it had. Every
committed output file is checked against the size and sha256 in the journal, and the first bad one is
computed again, with everything after it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import xxhash

from prep.core.chunk import Chunk
from prep.errors import UserError
from prep.text.arrow import numpy_of, utf8_of


def batch_digest(batch: pa.RecordBatch, quarantine: Sequence[dict] = ()) -> str:
    """A digest of what a chunk consumed: every column's values and every bad record, in order.

    Computed from the value bytes and relative offsets, so the same content gives the same digest however
    Arrow happened to lay out its buffers.
    """
    h = xxhash.xxh3_64()
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        h.update(name.encode() + b"\0")
        if col.null_count:
            h.update(numpy_of(col.is_null()).tobytes())
        if any(is_(col.type) for is_ in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                         pa.types.is_large_binary)):
            data, offsets = utf8_of(col)
            h.update(data[offsets[0]:offsets[-1]])
            h.update((offsets - offsets[0]).tobytes())
        else:
            h.update(json.dumps(col.to_pylist(), default=str).encode())
    for record in quarantine:
        h.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n")
    return h.hexdigest()


def chunk_digest(chunk: Chunk) -> str:
    """The digest a chunk is journalled with: `batch_digest` of what it holds, a run of .txt files by their
    names and sizes but not their paths, which differ for the same input read in place or through a remote
    filesystem (Ray)."""
    batch = chunk.batch
    if chunk.raw is not None and chunk.raw.format == "txt":
        batch = batch.drop_columns(["path"])
    return batch_digest(batch, chunk.quarantine)


def stamp(path: str, filesystem: pafs.FileSystem | None = None) -> tuple[int, int]:
    """(size, mtime_ns) of an input: of the file, or summed / latest over the files of a directory."""
    if filesystem is None:  # local: stat, never open (a FIFO must not be consumed here)
        if not os.path.isdir(path):
            st = os.stat(path)
            return st.st_size, st.st_mtime_ns
        stats = [os.stat(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        files = [i for i in filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
                 if i.type == pafs.FileType.File]
        return sum(i.size for i in files), max((i.mtime_ns or 0 for i in files), default=0)
    return info.size or 0, info.mtime_ns or 0


def changed_input(recorded: list, current: list) -> str | None:
    """The first input whose name, size or mtime differs from the journal's, as a few words; else None."""
    old = {row[0]: row[1:] for row in recorded}
    new = {row[0]: row[1:] for row in current}
    for name in sorted(set(old) | set(new)):
        if name not in new:
            return f"the input {name} is gone"
        if name not in old:
            return f"{name} is a new input"
        (old_size, *old_rest), (new_size, *new_rest) = old[name], new[name]
        if old_size != new_size:
            return f"the input {name} changed size ({old_size} -> {new_size} bytes)"
        if old_rest != new_rest:
            return f"the input {name} was modified (its mtime changed)"
    return None


def committed_digests(entries: Sequence[dict]) -> dict[int, tuple[str, str]]:
    """seq -> (source, digest) of every chunk the journal says was committed."""
    return {seq: (source, digest) for e in entries for seq, source, digest in e.get("chunks", [])}


def check_committed_chunk(expected: dict[int, tuple[str, str]], seq: int, source: str, digest: str) -> None:
    """A chunk that --resume would skip must be the one that was committed."""
    want = expected.get(seq)
    if want is None:
        raise UserError(f"--resume: the journal has no record of chunk {seq} (from {source}); "
                        "use --overwrite to start again")
    if want != (source, digest):
        where = source if want[0] == source else f"{want[0]} (now {source})"
        raise UserError(f"--resume: the input {where} differs from what was committed (chunk {seq}); "
                        "rerun with the original input, or use --overwrite to start again")


def entry_files(entry: dict) -> list[dict]:
    """The output files a journal entry (or manifest shard) lists: {file, bytes, sha256} each."""
    files = list(entry.get("files", []))
    if entry.get("file") and not any(f["file"] == entry["file"] for f in files):
        files.insert(0, {"file": entry["file"], "bytes": entry.get("bytes"), "sha256": entry.get("sha256")})
    return files


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def file_problem(fs: pafs.FileSystem, base: str, record: dict) -> str | None:
    """Why an output file does not match its record (missing, size, sha256), or None when it does."""
    path = f"{base.rstrip('/')}/{record['file']}"
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return f"{record['file']} is missing"
    if record.get("bytes") is not None and info.size != record["bytes"]:
        return f"{record['file']} has {info.size} bytes, {record['bytes']} were written"
    if record.get("sha256") and sha256_of(fs, path) != record["sha256"]:
        return f"{record['file']} does not match its sha256"
    return None


def first_bad_entry(entries: Sequence[dict], base: str, fs: Any = None) -> tuple[int, str] | None:
    """(index of the first journal entry with a missing or altered file, why), or None when all hold."""
    fs = fs or pafs.LocalFileSystem()
    for i, entry in enumerate(entries):
        for record in entry_files(entry):
            if (problem := file_problem(fs, base, record)) is not None:
                return i, problem
    return None


def skip_committed(stream: Iterator[Chunk], entries: list[dict], start_seq: int) -> tuple[int, Iterator[Chunk]]:
    """Read past the committed chunks, proving each is the one journalled, before anything is computed;
    return the input bytes skipped and the rest of the stream."""
    expected, skipped = committed_digests(entries), 0
    for chunk in stream:
        if chunk.seq >= start_seq:
            return skipped, itertools.chain([chunk], stream)
        check_committed_chunk(expected, chunk.seq, chunk.source, chunk_digest(chunk))
        skipped += chunk.input_bytes
    return skipped, iter(())
