"""Source: turn the user's input paths into a stream of Chunks.

Every format ends in the same shape: a RecordBatch of `id`, `text` (+ kept columns), with bad records set
aside in `Chunk.quarantine` (with source, position and reason) instead of being dropped or crashing the run.

Chunk size is counted in UTF-8 text bytes (what the tokenizer pays for), for every format alike: rows join a
chunk while its text stays within `chunk_bytes`; a document larger than that is a chunk of its own. The cut
points depend only on the sequence of text sizes, so they do not depend on how the file happened to be read.
Chunks never span two files, except that consecutive .txt files (one document each) are packed together.

Files are streamed in blocks of at most a few MB (or one document, when a document is larger): memory is
O(chunk_bytes), whatever the file size. A record longer than `max_document_bytes` is quarantined, having been
read in pieces and never held whole; only regular files are read (a FIFO or a device is refused up front).
JSON Lines is parsed block by block by pyarrow's JSON reader; only a block that pyarrow refuses (bad line, type
change, bad UTF-8, lone surrogate), that holds invalid UTF-8 inside a string, or whose rows cannot be matched to
their lines is re-read line by line with `json.loads`, to quarantine exactly the bad lines.

Positions (in quarantine records and generated ids `display:position`): the 1-based line for JSON Lines, the
1-based data row for CSV, the 0-based row index for Parquet and datasets, 0 for a text file. Every chunk carries
each row's file and position (`Chunk.origins`), so a document quarantined later (by the engine) is named alike.
Every string column is checked to be valid UTF-8 (vectorised per block, per row only when that fails). Chunk.input_bytes
are bytes of the file on disk (compressed, when it is), spread over a file's chunks so that they sum to its
size.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from prep.core.chunk import Chunk, Origins, RawSpec
from prep.errors import UserError
from prep.io.inputs import InputFile, arrow_files, expand_inputs, input_kind, is_hidden, total_input_bytes
from prep.io.records import (
    BOM,
    HEAD_BYTES,
    MAX_DOCUMENT_BYTES,
    NO_POSITIONS,
    POSITION_KEY,
    READ_ERRORS,
    JsonlParser,
    ReadOptions,
    assemble_rows,
    check_fields,
    counted_records,
    csv_record_ends,
    empty_rows,
    fault_record,
    file_record,
    invalid_utf8,
    parse_chunk,
    raw_batch,
    screen_columns,
    strict_error,
    to_batch,
    too_long_record,
    value_sizes,
)
from prep.text.arrow import arrow_of, binary_array

__all__ = ["InputFile", "expand_inputs", "input_kind", "is_hidden", "iter_chunks", "total_input_bytes"]

_CONTENT = re.compile(rb"[^ \t\r\n]")  # a block with none of it holds blank lines only

# ------------------------------------------------------------------------------------------------ chunks



class _Piece(NamedTuple):
    """What a reader hands the packer: good rows shaped as id, text, kept columns, plus the bad ones."""

    rows: pa.Table
    positions: np.ndarray  # int64 position of each row (line, row number or row index)
    raw_end: int  # input bytes consumed once this piece is read
    quarantine: list[dict]  # bad records of this piece, in position order


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
) -> Iterator[Chunk]:
    """Read `files` in order and yield Chunks with a gapless `seq` starting at 0 (see the module docstring).
    With `raw`, JSON Lines chunks come unparsed, for workers to parse (`prep.io.records.parse_raw`); the
    chunks are the same either way.

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
        if is_txt:
            yield from _txt_chunks(list(group), opts, seq)
            continue
        for f in group:
            if f.format in _CUTTERS:
                chunks = _CUTTERS[f.format](f, opts, seq)
                yield from chunks if raw else (parse_chunk(c, opts) for c in chunks)
                continue
            packer = _Packer(f, opts, seq)
            for piece in _READERS[f.format](f, opts):
                yield from packer.add(piece)
            yield from packer.finish()


class _Packer:
    """Cuts one file's pieces into chunks of about chunk_bytes of text."""

    def __init__(self, f: InputFile, opts: ReadOptions, seq: Iterator[int]) -> None:
        self.f, self.opts, self.seq = f, opts, seq
        self.rows: pa.Table | None = None
        self.sizes = NO_POSITIONS  # text bytes of each pending row
        self.positions = NO_POSITIONS
        self.raw_ends = NO_POSITIONS  # estimated input offset at the end of each pending row
        self.quarantine: list[dict] = []
        self.raw_seen = 0
        self.raw_done = 0

    def add(self, piece: _Piece) -> Iterator[Chunk]:
        if piece.quarantine and self.opts.strict:
            raise strict_error(self.f, piece.quarantine[0])
        n = piece.rows.num_rows
        if self.rows is None or not self.rows.num_rows:
            if piece.rows.num_columns:
                self.rows = piece.rows
        elif n:
            self.rows = pa.concat_tables([self.rows, piece.rows])
        if n:
            sizes = value_sizes(piece.rows.column(1))
            cum = np.cumsum(sizes)
            share = cum / cum[-1] if cum[-1] else np.arange(1, n + 1) / n
            raw_ends = self.raw_seen + np.floor(share * (piece.raw_end - self.raw_seen)).astype(np.int64)
            self.sizes = np.concatenate([self.sizes, sizes])
            self.positions = np.concatenate([self.positions, piece.positions])
            self.raw_ends = np.concatenate([self.raw_ends, raw_ends])
        self.raw_seen = max(self.raw_seen, piece.raw_end)
        self.quarantine += piece.quarantine
        yield from self._cut(final=False)

    def finish(self) -> Iterator[Chunk]:
        if len(self.sizes):
            yield from self._cut(final=True)
        elif self.quarantine:  # a file with bad records only
            yield self._emit(0, 0, final=True)

    def _cut(self, final: bool) -> Iterator[Chunk]:
        """Emit the chunks that are complete. The one holding the last pending row waits for the next piece
        (or the end of the file) even when full, so that the file's last chunk takes its remaining input
        bytes and bad records."""
        cum = np.cumsum(self.sizes)
        n, start, base, limit = len(cum), 0, 0, self.opts.chunk_bytes
        while start < n:
            end = max(int(np.searchsorted(cum, base + limit, side="right")), start + 1)
            if end == n and not final:
                break
            yield self._emit(start, end, end == n)
            start, base = end, cum[end - 1]
        self.sizes, self.positions = self.sizes[start:], self.positions[start:]
        self.raw_ends = self.raw_ends[start:]

    def _emit(self, start: int, end: int, final: bool) -> Chunk:
        """Chunk of pending rows [start, end) with the bad records up to its last row (all if final)."""
        taken, raw_end = len(self.quarantine), self.f.size
        if not final:
            last = self.positions[end - 1]
            taken = next((i for i, q in enumerate(self.quarantine) if q["position"] > last), taken)
            raw_end = int(self.raw_ends[end - 1])
        quarantine, self.quarantine = self.quarantine[:taken], self.quarantine[taken:]
        rows = self.rows if self.rows is not None else empty_rows(self.opts.keep)  # bad records only
        batch = to_batch(rows.slice(0, end - start))
        self.rows = rows.slice(end - start)
        input_bytes, self.raw_done = max(raw_end - self.raw_done, 0), max(raw_end, self.raw_done)
        origins = Origins(POSITION_KEY[self.f.format], self.positions[start:end], (self.f.display,))
        return Chunk(seq=next(self.seq), batch=batch, source=self.f.display,
                     text_bytes=int(self.sizes[start:end].sum()), input_bytes=input_bytes,
                     documents_in=batch.num_rows + len(quarantine), quarantine=quarantine, origins=origins)


# ----------------------------------------------------------------------------------------------- reading


def _open(f: InputFile) -> tuple[BinaryIO | pa.NativeFile, BinaryIO | pa.NativeFile]:
    """(raw file, decompressed stream): raw.tell() is how far into the file on disk the stream has read.
    gzip goes through ISA-L (~800 MB/s of output per core against zlib's ~300): the coordinator decompresses
    a single-stream file alone, so its speed bounds the whole run. zstd stays with pyarrow (~1.1 GB/s)."""
    if f.compression == "gzip":
        raw = open(f.path, "rb")  # noqa: SIM115 - closed by the caller, with the stream
        return raw, igzip.IGzipFile(fileobj=raw, mode="rb")
    raw = pa.OSFile(f.path)
    return raw, (pa.CompressedInputStream(raw, f.compression) if f.compression else raw)


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

    def _block_end(self, data: bytes) -> int:
        """Where the block at the start of `data` ends (just past a record end), 0 if `data` cannot tell yet."""
        if not self.csv:
            return data.rfind(b"\n", 0, self.size) + 1 or data.find(b"\n", self.size) + 1
        ends = self._ends(data)
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

    def __iter__(self) -> Iterator[tuple[bytes, int] | _Long]:
        try:
            raw, stream = _open(self.f)
        except READ_ERRORS as err:
            self.error = err
            return
        try:
            yield from self._read(raw, stream)
        finally:
            stream.close()
            raw.close()

    def _split(self, block: bytes, raw_end: int) -> Iterator[tuple[bytes, int] | _Long]:
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
            yield _Long(block[first:first + HEAD_BYTES], last - first - 1, raw_end)
            at = last
        if at < len(block):
            yield block[at:], raw_end

    def _blocks(self, data: bytes, raw_end: int, final: bool) -> Iterator[tuple[bytes, int] | _Long]:
        """Yield the complete blocks at the start of `data`; return (through `self.rest`) what is left."""
        while len(data) >= self.size and (cut := self._block_end(data)) and (cut < len(data) or final):
            yield from self._split(data[:cut], raw_end)
            data = data[cut:]
        if final and data:
            yield from self._split(data, raw_end)
            data = b""
        self.rest = data

    def _read(self, raw: pa.NativeFile, stream: pa.NativeFile) -> Iterator[tuple[bytes, int] | _Long]:
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


class _Guard:
    """Iterate what `make()` gives, stopping at the first read error and keeping it in `error`."""

    def __init__(self, make: Callable[[], Iterable]) -> None:
        self.make = make
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator:
        try:
            items = iter(self.make())
            while True:
                yield next(items)
        except StopIteration:
            return
        except READ_ERRORS as err:
            self.error = err


def _fault_piece(f: InputFile, error: BaseException, position: int) -> _Piece:
    return _Piece(pa.table({}), NO_POSITIONS, f.size, [fault_record(f, position, error)])


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
            parser.learn(block)
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
        if not block.strip(b"\r\n"):  # pyarrow skips empty lines
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


# ----- Parquet and datasets


def _read_columnar(f: InputFile, opts: ReadOptions, batches: Callable[[], Iterator[tuple[pa.Table, int]]]) \
        -> Iterator[_Piece]:
    """Pieces from (rows, raw_end) batches of a Parquet file or a saved dataset; position = 0-based row."""
    guard = _Guard(batches)
    row = 0
    for table, raw_end in guard:
        positions = row + np.arange(table.num_rows, dtype=np.int64)
        row += table.num_rows
        as_text = [c for c in dict.fromkeys((opts.text_field, opts.id_field))
                   if c in table.column_names and _is_text_type(table.schema.field(c).type)]
        rows, positions, quarantine = screen_columns(table, positions, as_text, f, opts)
        yield _Piece(rows, positions, raw_end, quarantine)
    if guard.error is not None:
        yield _fault_piece(f, guard.error, row)


def _columns(f: InputFile, schema: pa.Schema, rows: int, opts: ReadOptions) -> list[str]:
    """Columns to read from a typed source; the text must be a string or binary column."""
    if rows:
        check_fields(f, schema.names, opts)
        text_type = schema.field(opts.text_field).type
        if not _is_text_type(text_type):
            raise UserError(f"field {opts.text_field!r} in {f.display} is {text_type}, not text; "
                            "choose another with --text-field")
    return list(dict.fromkeys(c for c in (opts.id_field, opts.text_field, *opts.keep) if c in schema.names))


def _is_text_type(type_: pa.DataType) -> bool:
    return any(check(type_) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                          pa.types.is_large_binary))


def _rows_per_batch(text_bytes: int, rows: int, opts: ReadOptions) -> int:
    """Rows per read batch for about one chunk of text, from the average text size."""
    return int(min(max(opts.chunk_bytes * rows // max(text_bytes, 1), 1), 1 << 16))


def _read_parquet(f: InputFile, opts: ReadOptions) -> Iterator[_Piece]:
    def batches() -> Iterator[tuple[pa.Table, int]]:
        pf = pq.ParquetFile(f.path)
        meta, rows = pf.metadata, pf.metadata.num_rows
        columns = _columns(f, pf.schema_arrow, rows, opts)
        if not rows:
            return
        text_index = pf.schema_arrow.get_field_index(opts.text_field)
        text_bytes = sum(meta.row_group(g).column(text_index).total_uncompressed_size
                         for g in range(meta.num_row_groups))
        done = 0
        for batch in pf.iter_batches(batch_size=_rows_per_batch(text_bytes, rows, opts), columns=columns,
                                     use_threads=False):
            done += batch.num_rows
            yield pa.Table.from_batches([batch]), f.size * done // rows

    return _read_columnar(f, opts, batches)


def _read_dataset(f: InputFile, opts: ReadOptions) -> Iterator[_Piece]:
    def batches() -> Iterator[tuple[pa.Table, int]]:
        offset = 0
        for path in arrow_files(f.path):
            size = os.path.getsize(path)
            table = pa.ipc.open_stream(pa.memory_map(path)).read_all()  # zero-copy: pages load as read
            columns = _columns(f, table.schema, table.num_rows, opts)
            if table.num_rows:
                table = table.select(columns)
                step = _rows_per_batch(table.column(opts.text_field).nbytes, table.num_rows, opts)
                for start in range(0, table.num_rows, step):
                    part = table.slice(start, step)
                    yield part, offset + size * (start + part.num_rows) // table.num_rows
            offset += size

    return _read_columnar(f, opts, batches)


# ----- plain text


def _txt_chunks(files: list[InputFile], opts: ReadOptions, seq: Iterator[int]) -> Iterator[Chunk]:
    """One document per file (id = display name), consecutive files packed into chunks of about chunk_bytes
    of text; a chunk's `source` is its first file."""
    if opts.keep:
        kept = ", ".join(opts.keep)
        raise UserError(f"cannot keep columns {kept} from plain text files ({files[0].display})")
    group: list[tuple[InputFile, bytes | BaseException]] = []
    text_bytes = 0
    for f in files:
        try:
            raw, stream = _open(f)
            with raw, stream:  # a file longer than the limit is read no further than that
                content: bytes | BaseException = stream.read(opts.max_document_bytes + len(BOM) + 1)
        except READ_ERRORS as err:
            content = err
        if isinstance(content, bytes):
            content = content.removeprefix(BOM)
            if len(content) > opts.max_document_bytes:
                content = _TooLong(content[:HEAD_BYTES])
        size = len(content) if isinstance(content, bytes) else 0
        if group and text_bytes + size > opts.chunk_bytes:
            yield from _txt_chunk(group, opts, seq)
            group, text_bytes = [], 0
        group.append((f, content))
        text_bytes += size
    yield from _txt_chunk(group, opts, seq)


class _TooLong(Exception):
    """A text file longer than max_document_bytes: its first bytes."""

    def __init__(self, head: bytes) -> None:
        super().__init__(head)
        self.head = head


def _txt_chunk(group: list[tuple[InputFile, bytes | BaseException]], opts: ReadOptions,
               seq: Iterator[int]) -> Iterator[Chunk]:
    """The chunk of a group of text files; empty files are no documents, unreadable and too long ones are
    quarantined."""
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
    if quarantine and opts.strict:
        raise strict_error(group[0][0], quarantine[0])
    if not docs and not quarantine:
        return
    text = texts.filter(arrow_of(~invalid, pa.bool_())).cast(pa.string())
    displays = [docs[i][0].display for i in np.flatnonzero(~invalid)]
    ids = pa.chunked_array([binary_array([d.encode() for d in displays], pa.string())])
    rows = assemble_rows(ids, text, [], NO_POSITIONS, group[0][0], opts)
    yield Chunk(seq=next(seq), batch=to_batch(rows), source=group[0][0].display,
                text_bytes=int(pc.sum(pc.binary_length(text)).as_py() or 0),
                input_bytes=sum(f.size for f, _ in group), documents_in=rows.num_rows + len(quarantine),
                quarantine=quarantine, origins=Origins("row", np.zeros(len(displays), np.int64), tuple(displays)))


_READERS: dict[str, Callable[[InputFile, ReadOptions], Iterator[_Piece]]] = {
    "parquet": _read_parquet, "hf_dataset": _read_dataset,
}


_CUTTERS: dict[str, Callable[[InputFile, ReadOptions, Iterator[int]], Iterator[Chunk]]] = {
    "jsonl": _jsonl_chunks, "csv": _csv_chunks,
}
