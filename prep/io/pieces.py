"""Pieces: the worker's half of reading every raw chunk, and all of it for Parquet, saved datasets and .txt.

The Source cuts Parquet, saved datasets and .txt files from metadata alone (row groups and their sizes, the
offsets of an Arrow text column, file sizes) into chunks that name a file and a range (`RawSpec`); the worker
that gets a task opens the file and reads only its rows and the columns it needs, here, then screens them as
the Source once did (`screen_columns`: null texts, texts over max_document_bytes, invalid UTF-8 in any string
column, id/text/kept-column shaping), so a quarantine record keeps the exact row. `read_raw` is the one entry
point for any raw chunk, JSON Lines and CSV (parsed by `prep.io.records`) included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from isal import igzip

from prep.core.chunk import Chunk, Origins, RawSpec
from prep.io.inputs import InputFile
from prep.io.records import (
    BOM,
    HEAD_BYTES,
    READ_ERRORS,
    Parsed,
    ReadOptions,
    fault_record,
    file_record,
    invalid_utf8,
    is_text_type,
    parse_raw,
    parsed_rows,
    raw_buffer,
    screen_columns,
    strict_record_error,
)
from prep.text.arrow import arrow_of, binary_array

PIECE_FORMATS = ("parquet", "hf_dataset", "txt")  # chunks that name a file and a range, read by the worker
READ_STEP = 1 << 20  # bytes per read: of a text file, of Parquet pages, of what proves a Parquet piece
BATCH_ROWS = 1 << 16  # the most rows a Parquet read decodes at once


def open_input(f: InputFile, filesystem: pafs.FileSystem | None = None) \
        -> tuple[BinaryIO | pa.NativeFile, BinaryIO | pa.NativeFile]:
    """(raw file, decompressed stream): raw.tell() is how far into the file on disk the stream has read.
    gzip goes through ISA-L (~800 MB/s of output per core against zlib's ~300): the coordinator decompresses
    a single-stream file alone, so its speed bounds the whole run. zstd stays with pyarrow (~1.1 GB/s).
    `filesystem`: a remote file's (Ray), read in place."""
    if filesystem is not None:
        raw = filesystem.open_input_file(f.path)
    elif f.compression == "gzip":
        raw = open(f.path, "rb")  # noqa: SIM115 - closed by the caller, with the stream
    else:
        raw = pa.OSFile(f.path)
    if f.compression == "gzip":
        return raw, igzip.IGzipFile(fileobj=raw, mode="rb")
    return raw, (pa.CompressedInputStream(raw, f.compression) if f.compression else raw)


def read_raw(batch: pa.RecordBatch, spec: RawSpec, opts: ReadOptions, start: int = 0,
             stop: int | None = None) -> Parsed:
    """Units [start, stop) of a raw chunk as rows: parsed (JSON Lines, CSV), or read from the file the chunk
    names (Parquet and dataset rows, .txt files). A pure function of the input, so any worker (or a retry)
    gives the same rows."""
    stop = spec.units if stop is None else stop
    if spec.format == "txt":
        return _read_txt(batch.slice(start, stop - start), spec, opts)
    if spec.format in PIECE_FORMATS:
        return _read_rows(spec, opts, start, stop)
    return parse_raw(raw_buffer(batch), spec, opts, start, stop)


def parse_chunk(chunk: Chunk, opts: ReadOptions) -> Chunk:
    """A raw chunk read in this process (tools, the backend's sample, `iter_chunks(raw=False)`)."""
    if chunk.raw is None:
        return chunk
    parsed = read_raw(chunk.batch, chunk.raw, opts)
    if opts.strict and parsed.quarantine:
        raise strict_record_error(parsed.quarantine[0], chunk.raw.format)
    return Chunk(chunk.seq, parsed.batch, chunk.source, parsed.text_bytes, chunk.input_bytes,
                 chunk.documents_in + parsed.documents_in, chunk.quarantine + parsed.quarantine, parsed.origins)


# ----------------------------------------------------------------------------------- Parquet and datasets


class _Opened:
    """The last file this process opened for rows, kept for its next task: a file's pieces come one after
    another, and a Parquet footer or an Arrow stream's batch list read again per task costs O(file). A local
    file is known by its size and mtime too, so a file written again is opened again."""

    key: tuple | None = None
    value: Any = None
    cursor: _Cursor | None = None  # Parquet: where the last read stopped


def _opened(spec: RawSpec) -> Any:
    stamp = None
    if spec.filesystem is None:
        st = os.stat(spec.path)
        stamp = st.st_size, st.st_mtime_ns
    key = (spec.format, spec.path, spec.filesystem, stamp)
    if _Opened.key != key:
        _Opened.key, _Opened.cursor = None, None  # a failed open leaves nothing behind
        if spec.format == "parquet":
            pf = pq.ParquetFile(spec.path, filesystem=spec.filesystem, pre_buffer=False, buffer_size=READ_STEP)
            meta = pf.metadata
            rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            _Opened.value = pf, np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        else:  # a datasets Arrow stream, memory-mapped: slicing reads only the pages of its rows
            _Opened.value = pa.ipc.open_stream(pa.memory_map(spec.path)).read_all()
        _Opened.key = key
    return _Opened.value


class _Cursor:
    """A Parquet read of row groups `groups`, one batch at a time, stopped at file row `at` (the first row of
    `batch`, the batch under way, or of the next one)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], groups: tuple[int, int], at: int) -> None:
        self.batches, self.groups, self.at = batches, groups, at
        self.batch: pa.RecordBatch | None = None


def _parquet_rows(spec: RawSpec, a: int, b: int) -> Iterator[pa.Table]:
    """Rows [a, b) of a Parquet file, read from the row groups that hold them, one batch at a time. Parquet
    cannot seek to a row inside a group: a range inside a large group is decoded from where this process's
    last read of that group stopped (a worker gets the group's ranges in order, some of them), from the
    group's start only when it is behind, so a group costs each worker about one decode, not one per range.
    Kept between tasks: at most the rest of one batch."""
    pf, starts = _opened(spec)
    groups = int(np.searchsorted(starts, a, side="right")) - 1, int(np.searchsorted(starts, b, side="left"))
    cur = _Opened.cursor
    if cur is None or cur.groups != groups or cur.at > a:
        batches = pf.iter_batches(batch_size=max(min(b - a, BATCH_ROWS), 1), row_groups=range(*groups),
                                  columns=spec.schema.names, use_threads=False)
        cur = _Opened.cursor = _Cursor(batches, groups, int(starts[groups[0]]))
    _Opened.cursor = None  # until this read ends well
    while cur.at < b:
        if cur.batch is None:
            cur.batch = next(cur.batches, None)
            if cur.batch is None:
                return
        lo, hi = max(a - cur.at, 0), min(b - cur.at, cur.batch.num_rows)
        if hi > lo:
            yield pa.Table.from_batches([cur.batch.slice(lo, hi - lo)])
        if cur.at + cur.batch.num_rows > b:  # the batch's rest is for a later range
            break
        cur.at, cur.batch = cur.at + cur.batch.num_rows, None
    _Opened.cursor = cur


def _dataset_rows(spec: RawSpec, a: int, b: int) -> Iterator[pa.Table]:
    yield _opened(spec).select(spec.schema.names).slice(a, b - a)


def _read_rows(spec: RawSpec, opts: ReadOptions, start: int, stop: int) -> Parsed:
    """Rows [start, stop) of a Parquet or dataset piece, screened; a read that fails quarantines the rest of
    the range as one unreadable record at the row where it failed, as the Source did."""
    f = InputFile(spec.path, spec.format, None, 0, spec.source)
    read = _parquet_rows if spec.format == "parquet" else _dataset_rows
    tables: list[pa.Table] = []
    fault = None
    try:
        for table in read(spec, spec.offset + start, spec.offset + stop):
            tables.append(table)  # what was read before a fault is kept
    except READ_ERRORS as err:
        fault = err
    table = pa.concat_tables(tables) if tables else spec.schema.empty_table()
    positions = spec.first + start + np.arange(table.num_rows, dtype=np.int64)
    as_text = [c for c in dict.fromkeys((opts.text_field, opts.id_field))
               if c in table.column_names and is_text_type(table.schema.field(c).type)]
    rows, positions, quarantine = screen_columns(table, positions, as_text, f, opts)
    if fault is not None:
        quarantine.append(fault_record(f, spec.first + start + table.num_rows, fault))
    return parsed_rows(rows, Origins("row", positions, (spec.source,)), quarantine)


# -------------------------------------------------------------------------------------------- plain text


def txt_batch(files: list[InputFile]) -> pa.RecordBatch:
    """What a chunk of .txt files carries: each file's path, name, size and compression (none: "")."""
    def strings(values: list[str]) -> pa.Array:
        return binary_array([v.encode() for v in values], pa.string())

    return pa.RecordBatch.from_arrays(
        [strings([f.path for f in files]), strings([f.display for f in files]),
         arrow_of(np.array([f.size for f in files], np.int64), pa.int64()),
         strings([f.compression or "" for f in files])],
        names=["path", "display", "bytes", "compression"])


class _TooLong(Exception):
    """A text file longer than max_document_bytes: its first bytes."""

    def __init__(self, head: bytes) -> None:
        super().__init__(head)
        self.head = head


def _read_document(f: InputFile, limit: int, filesystem: pafs.FileSystem | None) -> bytes | BaseException:
    """A text file's content without its BOM, read in steps and never past the limit; too long (its head) or
    unreadable (the error) otherwise. An uncompressed file whose size says it is too long is not read."""
    too_long = f.compression is None and f.size > limit + len(BOM)  # known from its size: only its head is read
    want = (HEAD_BYTES if too_long else limit) + len(BOM) + 1
    try:
        raw, stream = open_input(f, filesystem)
        with raw, stream:
            parts, got = [], 0
            while got < want and (part := stream.read(min(READ_STEP, want - got))):
                parts.append(part)
                got += len(part)
    except READ_ERRORS as err:
        return err
    content = b"".join(parts).removeprefix(BOM)
    return _TooLong(content[:HEAD_BYTES]) if too_long or len(content) > limit else content


def _read_txt(files: pa.RecordBatch, spec: RawSpec, opts: ReadOptions) -> Parsed:
    """A run of text files, one document each (id = the file's name); empty files are no documents,
    unreadable, too long and invalid UTF-8 ones are quarantined, in file order."""
    group = []
    for path, display, size, compression in zip(*(files.column(i).to_pylist() for i in range(4)), strict=True):
        f = InputFile(path, "txt", compression or None, size, display)
        group.append((f, _read_document(f, opts.max_document_bytes, spec.filesystem)))
    docs = [(f, c) for f, c in group if isinstance(c, bytes) and c]
    texts = pa.chunked_array([binary_array([c for _, c in docs], pa.large_binary())], pa.large_binary())
    invalid = invalid_utf8(texts)
    invalid = np.zeros(len(docs), dtype=bool) if invalid is None else invalid
    bad_docs = {docs[i][0].path for i in np.flatnonzero(invalid)}

    def bad(f: InputFile, c: bytes | BaseException) -> dict:
        if isinstance(c, _TooLong):
            return file_record(f, 0, f"file longer than max_document_bytes ({opts.max_document_bytes})", c.head)
        return fault_record(f, 0, c) if isinstance(c, BaseException) else file_record(f, 0, "invalid UTF-8", c)

    quarantine = [bad(f, c) for f, c in group if isinstance(c, BaseException) or f.path in bad_docs]
    text = texts.filter(arrow_of(~invalid, pa.bool_())).cast(pa.string())
    displays = [docs[i][0].display for i in np.flatnonzero(~invalid)]
    ids = pa.chunked_array([binary_array([d.encode() for d in displays], pa.string())], pa.string())
    rows = pa.table([ids, text], names=["id", "text"])
    origins = Origins("row", np.zeros(len(displays), np.int64), tuple(displays) or (spec.source,))
    return parsed_rows(rows, origins, quarantine)
