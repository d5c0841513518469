"""Source: turn the user's input paths into a stream of Chunks, cut without parsing or decoding a record.

The coordinator does no per-document work: it cuts input into raw chunks (`Chunk.raw`) that workers read
(`prep.io.pieces.read_raw`), and routes them. Every format ends, in the worker, in the same shape: a RecordBatch
of `id`, `text` (+ kept columns), with bad records set aside (with file, position and reason) instead of being
dropped or crashing the run. Each cutting rule is a function of the input's bytes or metadata alone, so chunks
(and shards) do not depend on how the file happened to be read, nor on workers, router or seed:

- JSON Lines and CSV: blocks of whole records (`_Blocks`): the longest run of whole lines (CSV: records, a
  newline inside quotes ending none) within `chunk_bytes`, or one record when that alone is longer. A record
  longer than `max_document_bytes` is quarantined here, having been read in pieces and never held whole.
- Parquet: from the footer alone, whole row groups packed while the text column's uncompressed size (from the
  metadata) stays within `chunk_bytes`; a row group larger than that alone is cut into ceil(size /
  chunk_bytes) row ranges of equal row counts (`_row_pieces`).
- Saved datasets: each Arrow file memory-mapped, its rows packed by text size, read from the text column's
  offsets (no text is read), within `chunk_bytes`, a longer document alone.
- .txt (one document per file): consecutive files packed by their size on disk within `chunk_bytes`, never
  opened here. Chunks never span two files, except these.

Files are streamed in blocks of at most a few MB (or one record, when a record is larger): memory is
O(chunk_bytes), whatever the file size; only regular files are read (a FIFO or a device is refused up front).

Positions (in quarantine records and generated ids `display:position`): the 1-based line for JSON Lines, the
1-based data row for CSV, the 0-based row index for Parquet and datasets, 0 for a text file. Chunk.input_bytes
are bytes of the file on disk (compressed, when it is), spread over a file's chunks so that they sum to its
size.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from prep.core.chunk import Chunk, Origins, RawSpec
from prep.errors import UserError
from prep.io.inputs import InputFile, arrow_files, expand_inputs, input_kind, is_hidden, total_input_bytes
from prep.io.pieces import PIECE_FORMATS, READ_STEP, open_input, parse_chunk, txt_batch
from prep.io.records import (
    BOM,
    HEAD_BYTES,
    MAX_DOCUMENT_BYTES,
    NO_POSITIONS,
    POSITION_KEY,
    READ_ERRORS,
    JsonlParser,
    ReadOptions,
    check_fields,
    counted_records,
    csv_record_ends,
    empty_rows,
    fault_record,
    is_text_type,
    raw_batch,
    strict_error,
    to_batch,
    too_long_record,
    value_sizes,
)

__all__ = ["InputFile", "expand_inputs", "input_kind", "is_hidden", "iter_chunks", "total_input_bytes"]

_CONTENT = re.compile(rb"[^ \t\r\n]")  # a block with none of it holds blank lines only
_NOT_NEWLINE = re.compile(rb"[^\r\n]")  # a CSV block with none of it holds empty lines only

# ------------------------------------------------------------------------------------------------ chunks



def iter_chunks(
    files: Sequence[InputFile],
    *,
    text_field: str = "text",
    id_field: str = "id",
    keep_columns: Sequence[str] = (),
    chunk_bytes: int = 1 << 20,
    strict: bool = False,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    raw: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> Iterator[Chunk]:
    """Read `files` in order and yield Chunks with a gapless `seq` starting at 0 (see the module docstring).
    With `raw`, chunks come unread, for workers to read (`prep.io.pieces.read_raw`); the chunks are the same
    either way. `filesystem`: where remote Parquet and .txt files are (Ray), read there by the workers.

    A missing text field or kept column raises UserError; bad records, records longer than
    `max_document_bytes` and unreadable input are quarantined, or raise UserError when `strict`.
    """
    if chunk_bytes < 1 or max_document_bytes < 1:
        raise ValueError("chunk_bytes and max_document_bytes must be positive")
    keep = tuple(keep_columns)
    if {"id", "text"} & set(keep) or len(set(keep)) < len(keep):
        raise UserError(f"kept columns must be distinct and not named id or text: {', '.join(keep)}")
    opts = ReadOptions(text_field, id_field, keep, chunk_bytes, strict, max_document_bytes)
    seq = itertools.count()
    for is_txt, group in itertools.groupby(files, key=lambda f: f.format == "txt"):
        members = list(group)
        for run in [members] if is_txt else [[f] for f in members]:  # consecutive .txt files pack together
            if run[0].format in PIECE_FORMATS:
                chunks = _PIECE_CUTTERS[run[0].format](run, opts, seq, filesystem)
            else:
                chunks = _CUTTERS[run[0].format](run[0], opts, seq)
            yield from chunks if raw else (parse_chunk(c, opts) for c in chunks)


# ----------------------------------------------------------------------------------------------- reading


class _Long(NamedTuple):
    """A record longer than max_document_bytes, skipped: its first bytes (for the quarantine record) and size."""

    head: bytes
    size: int  # bytes, without the newline that ends it
    raw_end: int


class _Blocks:
    """Blocks of whole records (lines; CSV rows), streamed from a possibly compressed file, with the BOM
    stripped. A block is the longest run of whole records within `size` bytes, or one record when that alone
    is longer: a rule on the bytes alone, so blocks (and the chunks of JSON Lines, which are these blocks) do
    not depend on how the file happened to be read. A record longer than `limit` comes as a `_Long` instead,
    having been read in pieces of `step` bytes and never held whole (at most `size + limit + step` bytes are).
    A read error ends the iteration and is kept in `error`: the complete records read before it are still
    yielded."""

    step = 1 << 20  # bytes per read: a read error loses at most this much before the fault

    def __init__(self, f: InputFile, size: int, csv: bool, limit: int) -> None:
        self.f, self.size, self.csv, self.limit = f, size, csv, limit
        self.error: BaseException | None = None

    def _ends(self, data: bytes, quotes_before: int = 0) -> np.ndarray:
        """Offsets just past each record end in `data`."""
        if self.csv:
            return csv_record_ends(data, quotes_before)
        return np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1

    def _block_end(self, data: bytes, at: int) -> int:
        """Where the block at offset `at` of `data` ends (bytes past `at`, just past a record end), 0 if `data`
        cannot tell yet."""
        if not self.csv:
            end = data.rfind(b"\n", at, at + self.size) + 1 or data.find(b"\n", at + self.size) + 1
            return end - at if end else 0
        ends = self._ends(memoryview(data)[at:])
        within = ends[ends <= self.size]
        return int(within[-1]) if len(within) else int(ends[0]) if len(ends) else 0

    def _last_end(self, data: bytes) -> int:
        """Offset just past the last record end in `data`, 0 if none."""
        if not self.csv:
            return data.rfind(b"\n") + 1
        ends = self._ends(data)
        return int(ends[-1]) if len(ends) else 0

    def _first_end(self, data: bytes, quotes_before: int) -> int:
        """Offset just past the first record end in `data`, 0 if none."""
        if not self.csv:
            return data.find(b"\n") + 1
        ends = self._ends(data, quotes_before)
        return int(ends[0]) if len(ends) else 0

    def __iter__(self) -> Iterator[tuple[memoryview, int] | _Long]:
        try:
            raw, stream = open_input(self.f)
        except READ_ERRORS as err:
            self.error = err
            return
        try:
            yield from self._read(raw, stream)
        finally:
            stream.close()
            raw.close()

    def _split(self, block: memoryview, raw_end: int) -> Iterator[tuple[memoryview, int] | _Long]:
        """A block of whole records, with those longer than the limit taken out (looked for only in a block that
        is itself longer than the limit)."""
        if len(block) <= self.limit:
            yield block, raw_end
            return
        ends = self._ends(block)
        starts = np.concatenate([[0], ends[:-1]])
        at = 0
        for i in np.flatnonzero(ends - starts - 1 > self.limit):
            first, last = int(starts[i]), int(ends[i])
            if first > at:
                yield block[at:first], raw_end
            yield _Long(bytes(block[first:first + HEAD_BYTES]), last - first - 1, raw_end)
            at = last
        if at < len(block):
            yield block[at:], raw_end

    def _blocks(self, data: bytes, raw_end: int, final: bool) -> Iterator[tuple[memoryview, int] | _Long]:
        """Yield the complete blocks at the start of `data`, as views of it (a copy of each MiB cost the
        coordinator ~0.1-0.4 ms); return (through `self.rest`) what is left."""
        view, at = memoryview(data), 0
        while len(data) - at >= self.size and (cut := self._block_end(data, at)) and (at + cut < len(data) or final):
            yield from self._split(view[at:at + cut], raw_end)
            at += cut
        if final and at < len(data):
            yield from self._split(view[at:], raw_end)
            at = len(data)
        self.rest = data[at:]

    def _read(self, raw: pa.NativeFile, stream: pa.NativeFile) -> Iterator[tuple[memoryview, int] | _Long]:
        self.rest = b""
        first = True
        long: list | None = None  # [head, size, quotes] of an over-long record being skipped
        while True:
            try:
                data = stream.read(min(self.step, self.size))
            except READ_ERRORS as err:
                self.error = err
                break
            if first and data.startswith(BOM):
                data = data[len(BOM):]
            first = False
            if not data:
                break
            if long is not None:  # skip to the end of the over-long record
                end = self._first_end(data, long[2])
                if not end:
                    long[1] += len(data)
                    long[2] += data.count(b'"') if self.csv else 0
                    continue
                yield _Long(long[0], long[1] + end - 1, raw.tell())
                long, data = None, data[end:]
            yield from self._blocks(self.rest + data, raw.tell(), final=False)
            if len(self.rest) > self.limit and not self._last_end(self.rest):  # the open record is over the limit
                long = [self.rest[:HEAD_BYTES], len(self.rest), self.rest.count(b'"') if self.csv else 0]
                self.rest = b""
        if long is not None and self.error is None:  # the last record, without a newline
            yield _Long(long[0], long[1], raw.tell())
        tail = self.rest
        if self.error is not None:
            tail = tail[: self._last_end(tail)]  # an incomplete last record is part of the unreadable rest
        elif tail and not tail.endswith(b"\n"):
            tail += b"\n"
        yield from self._blocks(tail, raw.tell(), final=True)


# ----- JSON Lines


def _jsonl_chunks(f: InputFile, opts: ReadOptions, seq: Iterator[int]) -> Iterator[Chunk]:
    """Raw chunks of whole lines (see `_Blocks`), cut without parsing: the coordinator's cost is a read, a
    newline count and, once per file, learning the column types from the file's first LEARN_BYTES. An
    over-long line or a read error becomes a chunk of that one bad record."""
    parser = JsonlParser(f, opts)
    blocks = _Blocks(f, opts.chunk_bytes, csv=False, limit=opts.max_document_bytes)
    line = 1
    cut = _Cut(f)
    for item in blocks:
        if isinstance(item, _Long):
            yield from cut.add(_bad_chunk(f, next(seq), too_long_record(f, line, item.size, item.head, opts), opts),
                               item.raw_end)
            line += 1
            continue
        block, raw_end = item
        if not _CONTENT.search(block):  # blank lines only: no chunk (its bytes go to the next one)
            line += counted_records(block, "jsonl")
            continue
        if parser.types is None:
            parser.learn(bytes(block))
        spec = RawSpec("jsonl", f.display, line, counted_records(block, "jsonl"), parser.schema)
        line += spec.units
        yield from cut.add(Chunk(next(seq), raw_batch(block), f.display, len(block), 0, 0, raw=spec), raw_end)
    if blocks.error is not None:
        yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, line, blocks.error), opts), f.size)
    yield from cut.finish()


class _Cut:
    """Gives each of a file's chunks its share of the input bytes (on disk: compressed, when it is), held back
    by one chunk so that the last takes the file's remaining bytes and a file's chunks sum to its size."""

    def __init__(self, f: InputFile) -> None:
        self.f, self.done = f, 0
        self.held: Chunk | None = None

    def add(self, chunk: Chunk, raw_end: int) -> Iterator[Chunk]:
        chunk.input_bytes, self.done = max(raw_end - self.done, 0), max(raw_end, self.done)
        if self.held is not None:
            yield self.held
        self.held = chunk

    def finish(self) -> Iterator[Chunk]:
        if self.held is not None:
            self.held.input_bytes += self.f.size - self.done
            yield self.held
            self.held = None


def _bad_chunk(f: InputFile, seq: int, record: dict, opts: ReadOptions) -> Chunk:
    """A chunk of one bad record that the Source found (an over-long line, a read error)."""
    if opts.strict:
        raise strict_error(f, record)
    rows = to_batch(empty_rows(opts.keep))
    return Chunk(seq, rows, f.display, 0, 0, 1, [record], Origins(POSITION_KEY[f.format], NO_POSITIONS, (f.display,)))


def _csv_chunks(f: InputFile, opts: ReadOptions, seq: Iterator[int]) -> Iterator[Chunk]:
    """Raw chunks of whole CSV records (a newline inside quotes ends none), cut like JSON Lines; the header is
    read here, once, and travels with every chunk. Positions are data rows: the non-empty records after the
    header."""
    blocks = _Blocks(f, opts.chunk_bytes, csv=True, limit=opts.max_document_bytes)
    names: list[str] | None = None
    row = 0  # data rows met so far
    cut = _Cut(f)
    for item in blocks:
        if isinstance(item, _Long):
            if names is None:  # the header: the file cannot be read
                yield from cut.add(_bad_chunk(f, next(seq), too_long_record(f, 0, item.size, item.head, opts), opts),
                                   f.size)
                break
            row += 1
            yield from cut.add(_bad_chunk(f, next(seq), too_long_record(f, row, item.size, item.head, opts), opts),
                               item.raw_end)
            continue
        block, raw_end = item
        if names is None:
            ends = csv_record_ends(block, 0)
            header_end = int(ends[0]) if len(ends) else len(block)
            try:
                names = pacsv.read_csv(pa.py_buffer(block[:header_end])).column_names
            except pa.ArrowInvalid as err:
                yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, 0, err), opts), f.size)
                break
            block = block[header_end:]
        if not _NOT_NEWLINE.search(block):  # pyarrow skips empty lines
            continue
        check_fields(f, names, opts)
        schema = pa.schema([(name, pa.binary()) for name in names])
        spec = RawSpec("csv", f.display, row + 1, len(csv_record_ends(block, 0)), schema)
        row += counted_records(block, "csv")
        yield from cut.add(Chunk(next(seq), raw_batch(block), f.display, len(block), 0, 0, raw=spec), raw_end)
    else:
        if blocks.error is not None:
            yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, row + 1, blocks.error), opts), f.size)
    yield from cut.finish()


# ----- Parquet, datasets, .txt: cut from metadata, read by the workers (prep.io.pieces)


def _packed(sizes: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Runs [start, end) of consecutive items whose sizes sum to at most `limit`, taken greedily; an item larger
    than that alone is a run of its own. A rule on the sizes alone."""
    cum = np.cumsum(sizes)
    start, base = 0, 0
    while start < len(cum):
        end = max(int(np.searchsorted(cum, base + limit, side="right")), start + 1)
        yield start, end
        start, base = end, int(cum[end - 1])


def _row_pieces(rows: np.ndarray, sizes: np.ndarray, limit: int) -> Iterator[tuple[int, int, int]]:
    """(first row, end row, text bytes) of each piece of a Parquet file: whole row groups packed while their
    text stays within `limit` (`_packed`); a group larger than `limit` alone is cut into ceil(size / limit)
    row ranges of equal row counts (row sizes inside a group are unknown until it is decoded)."""
    starts = np.concatenate([[0], np.cumsum(rows)])
    for a, b in _packed(sizes, limit):
        size, n = int(sizes[a:b].sum()), int(starts[b] - starts[a])
        parts = min(-(-size // limit), n) if b - a == 1 else 1
        for i in range(parts):
            lo, hi = int(starts[a]) + n * i // parts, int(starts[a]) + n * (i + 1) // parts
            if hi > lo:
                yield lo, hi, size * (i + 1) // parts - size * i // parts


def _proof(*parts: object) -> pa.RecordBatch:
    """What a row piece's chunk carries for --resume to digest: what proves its rows without reading them."""
    return raw_batch(":".join(str(p) for p in parts).encode())


def _parquet_chunks(files: list[InputFile], opts: ReadOptions, seq: Iterator[int],
                    filesystem: pafs.FileSystem | None) -> Iterator[Chunk]:
    """Row pieces of a Parquet file (`_row_pieces`), from its footer: no page is decoded here. Each chunk's
    proof is the xxh3 of the stored bytes of the row groups that hold its rows (pages as written, compressed),
    with its row range: what --resume checks, as strong as a JSON Lines chunk's digest of its bytes, for a
    read at disk speed and no decoding."""
    (f,) = files
    cut = _Cut(f)
    try:
        source, meta, schema = _open_parquet(f, filesystem)
    except READ_ERRORS as err:
        yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, 0, err), opts), f.size)
        yield from cut.finish()
        return
    with source:
        columns = _columns(f, schema, meta.num_rows, opts)
        if meta.num_rows:
            text = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == opts.text_field)
            groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
            rows = np.array([g.num_rows for g in groups], np.int64)
            sizes = np.array([g.column(text).total_uncompressed_size for g in groups], np.int64)
            starts = np.concatenate([[0], np.cumsum(rows)])
            read = pa.schema([schema.field(c) for c in columns])
            digests = _GroupDigests(source, groups)
            for a, b, size in _row_pieces(rows, sizes, opts.chunk_bytes):
                first, last = int(np.searchsorted(starts, a, "right")) - 1, int(np.searchsorted(starts, b, "left"))
                try:
                    proof = _proof(digests.of(first, last), a, b)
                except READ_ERRORS as err:
                    yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, a, err), opts), f.size)
                    break
                spec = RawSpec("parquet", f.display, a, b - a, read, f.path, a, filesystem)
                yield from cut.add(Chunk(next(seq), proof, f.display, size, 0, 0, raw=spec),
                                   f.size * b // meta.num_rows)
    yield from cut.finish()


def _open_parquet(f: InputFile, filesystem: pafs.FileSystem | None) -> tuple[pa.NativeFile, Any, pa.Schema]:
    """(open file, metadata, Arrow schema) of a Parquet file: its footer read, nothing else."""
    source = filesystem.open_input_file(f.path) if filesystem else pa.OSFile(f.path)
    try:
        pf = pq.ParquetFile(source)
        return source, pf.metadata, pf.schema_arrow
    except BaseException:
        source.close()
        raise


class _GroupDigests:
    """xxh3-64 of the stored bytes of row groups [first, last) of a Parquet file (every column chunk, from its
    first page to its end), read in steps of READ_STEP; the last answer is kept, for the row ranges of one
    large group."""

    def __init__(self, source: pa.NativeFile, groups: list) -> None:
        self.source, self.groups = source, groups
        self.last: tuple[tuple[int, int], str] | None = None

    def of(self, first: int, last: int) -> str:
        if self.last is None or self.last[0] != (first, last):
            h = xxhash.xxh3_64()
            for g in self.groups[first:last]:
                spans = [_column_span(g.column(i)) for i in range(g.num_columns)]
                at, end = min(s for s, _ in spans), max(e for _, e in spans)
                while at < end:
                    h.update(self.source.read_at(min(READ_STEP, end - at), at))
                    at += READ_STEP
            self.last = (first, last), h.hexdigest()
        return self.last[1]


def _column_span(column: Any) -> tuple[int, int]:
    """Bytes [start, end) of a column chunk in its file: its dictionary page (if any), then its data pages."""
    start = column.data_page_offset
    if column.has_dictionary_page and 0 < column.dictionary_page_offset < start:
        start = column.dictionary_page_offset
    return start, start + column.total_compressed_size


def _columns(f: InputFile, schema: pa.Schema, rows: int, opts: ReadOptions) -> list[str]:
    """Columns to read from a typed source; the text must be a string or binary column."""
    if rows:
        check_fields(f, schema.names, opts)
        text_type = schema.field(opts.text_field).type
        if not is_text_type(text_type):
            raise UserError(f"field {opts.text_field!r} in {f.display} is {text_type}, not text; "
                            "choose another with --text-field")
    return list(dict.fromkeys(c for c in (opts.id_field, opts.text_field, *opts.keep) if c in schema.names))


def _dataset_chunks(files: list[InputFile], opts: ReadOptions, seq: Iterator[int],
                    filesystem: pafs.FileSystem | None) -> Iterator[Chunk]:
    """Row ranges of each Arrow file of a saved dataset, packed by their text sizes (`_packed`), which the text
    column's offsets give: the files are memory-mapped and no text is read here. Positions count rows across
    the dataset's files. Each chunk's proof is the xxh3 of its rows' text sizes."""
    (f,) = files
    cut = _Cut(f)
    base, done = 0, 0  # rows and bytes of the files before
    for path in arrow_files(f.path):
        size = os.path.getsize(path)
        try:
            table = pa.ipc.open_stream(pa.memory_map(path)).read_all()  # zero-copy: pages load as read
        except READ_ERRORS as err:
            yield from cut.add(_bad_chunk(f, next(seq), fault_record(f, base, err), opts), f.size)
            break
        columns = _columns(f, table.schema, table.num_rows, opts)
        if table.num_rows:
            sizes = value_sizes(table.column(opts.text_field))
            read = pa.schema([table.schema.field(c) for c in columns])
            for a, b in _packed(sizes, opts.chunk_bytes):
                spec = RawSpec("hf_dataset", f.display, base + a, b - a, read, path, a)
                proof = _proof(os.path.basename(path), a, b, xxhash.xxh3_64_hexdigest(sizes[a:b].tobytes()))
                chunk = Chunk(next(seq), proof, f.display, int(sizes[a:b].sum()), 0, 0, raw=spec)
                yield from cut.add(chunk, done + size * b // table.num_rows)
        base, done = base + table.num_rows, done + size
    yield from cut.finish()


def _txt_chunks(files: list[InputFile], opts: ReadOptions, seq: Iterator[int],
                filesystem: pafs.FileSystem | None) -> Iterator[Chunk]:
    """One document per file (id = display name): consecutive files packed by their size on disk (`_packed`),
    never opened here; a chunk's `source` is its first file. An empty file is no document and is left out."""
    if opts.keep:
        kept = ", ".join(opts.keep)
        raise UserError(f"cannot keep columns {kept} from plain text files ({files[0].display})")
    files = [f for f in files if f.size]
    for a, b in _packed(np.array([f.size for f in files], np.int64), opts.chunk_bytes):
        run = files[a:b]
        size = sum(f.size for f in run)
        spec = RawSpec("txt", run[0].display, 0, b - a, None, filesystem=filesystem)
        yield Chunk(next(seq), txt_batch(run), run[0].display, size, size, 0, raw=spec)


_CUTTERS: dict[str, Callable[[InputFile, ReadOptions, Iterator[int]], Iterator[Chunk]]] = {
    "jsonl": _jsonl_chunks, "csv": _csv_chunks,
}
_PIECE_CUTTERS: dict[str, Callable[[list[InputFile], ReadOptions, Iterator[int], pafs.FileSystem | None],
                                   Iterator[Chunk]]] = {
    "parquet": _parquet_chunks, "hf_dataset": _dataset_chunks, "txt": _txt_chunks,
}
