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

import glob
import itertools
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from prep.core.chunk import Chunk, Origins
from prep.errors import UserError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt",
           ".parquet": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUPPORTED = (".jsonl, .json, .ndjson, .csv, .txt (each also as .gz or .zst), .parquet, "
             "or a directory written by datasets' save_to_disk")
RAW_CHARS = 1000  # quarantine records keep at most this much of the raw record
MAX_DOCUMENT_BYTES = 64 * 2**20  # a longer record is quarantined, read in bounded pieces, never held whole
_UNIT = {"jsonl": "line", "csv": "row", "parquet": "row", "hf_dataset": "row", "txt": "file"}
_KEY = {"jsonl": "line", "csv": "row", "parquet": "row", "hf_dataset": "row", "txt": "row"}  # in quarantine records
_HEAD = 4 * RAW_CHARS  # bytes kept of an over-long record: enough for RAW_CHARS characters
_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, pa.ArrowException)
_NO_POSITIONS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class InputFile:
    """One input: a file, or one split of a `datasets` save_to_disk directory."""

    path: str
    format: str  # "jsonl" | "parquet" | "csv" | "txt" | "hf_dataset"
    compression: str | None  # None | "gzip" | "zstd"
    size: int  # bytes on disk (all data files, for a dataset)
    display: str  # path relative to the argument it came from: used in generated ids and quarantine records


# --------------------------------------------------------------------------------------------- expanding


def expand_inputs(paths: Sequence[str]) -> list[InputFile]:
    """Expand files, directories and glob patterns into the inputs to read, deterministically.

    Arguments keep the order given and what each one expands to is sorted. A file named twice is read once
    (nothing doubled); when two inputs would get the same display name, all use their paths as given instead.
    """
    found: dict[str, InputFile] = {}
    for arg in paths:
        for f in _expand(arg):
            found.setdefault(os.path.realpath(f.path), f)
    files = list(found.values())
    if len({f.display for f in files}) < len(files):
        files = [replace(f, display=os.path.normpath(f.path)) for f in files]
    return files


def total_input_bytes(files: Sequence[InputFile]) -> int:
    """Bytes on disk of all inputs: the progress bar's total, matched by the sum of `Chunk.input_bytes`."""
    return sum(f.size for f in files)


def _expand(arg: str) -> list[InputFile]:
    if os.path.isdir(arg):
        files = _walk(arg, "")
        if not files:
            raise UserError(f"no input files in {arg}; supported: {SUPPORTED}")
        return files
    if os.path.exists(arg):
        kind = input_kind(arg)
        if kind is None:
            raise UserError(f"unsupported input {arg}; supported: {SUPPORTED}")
        return [_input(arg, os.path.basename(arg), kind)]
    if any(c in arg for c in "*?["):
        base = _glob_base(arg)
        files = []
        for match in sorted(glob.glob(arg, recursive=True)):
            rel = os.path.relpath(match, base)
            if os.path.isdir(match):
                files += _walk(match, rel)
            elif (kind := input_kind(match)) is not None:
                files.append(_input(match, rel, kind))
        if files:
            return files
    raise UserError(f"input not found: {arg}")


def _walk(root: str, prefix: str) -> list[InputFile]:
    """Inputs under a directory, sorted; hidden and `_`-prefixed names (our own _manifest.json, ...) are
    skipped, and a dataset directory counts as one input per split."""
    own = _dataset_inputs(root, prefix or os.path.basename(os.path.abspath(root)))
    if own is not None:
        return own
    files: list[InputFile] = []

    def fail(err: OSError) -> None:
        raise UserError(f"cannot read directory {err.filename}: {err.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        rel = os.path.normpath(os.path.join(prefix, os.path.relpath(dirpath, root)))
        for d in sorted(dirnames):
            dirnames.remove(d)
            if is_hidden(d):
                continue
            datasets = _dataset_inputs(os.path.join(dirpath, d), os.path.normpath(os.path.join(rel, d)))
            if datasets is None:
                dirnames.append(d)
            else:
                files += datasets
        for name in filenames:
            if not is_hidden(name) and (kind := input_kind(name)) is not None:
                display = os.path.normpath(os.path.join(rel, name))
                files.append(_input(os.path.join(dirpath, name), display, kind))
    return sorted(files, key=lambda f: f.display)


def is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: display names are relative to it."""
    parts = pattern.split(os.sep)
    fixed = list(itertools.takewhile(lambda p: not any(c in p for c in "*?["), parts[:-1]))
    return os.sep.join(fixed) or ("/" if pattern.startswith(os.sep) else ".")


def input_kind(path: str) -> tuple[str, str | None] | None:
    """(format, compression) from a file name, or None when the name is not a supported format."""
    name = os.path.basename(path).lower()
    compression = None
    for ext, codec in COMPRESSIONS.items():
        if name.endswith(ext):
            name, compression = name[: -len(ext)], codec
    fmt = FORMATS.get(os.path.splitext(name)[1])
    if fmt is None or (fmt == "parquet" and compression):
        return None
    return fmt, compression


def _input(path: str, display: str, kind: tuple[str, str | None]) -> InputFile:
    """A regular file to read. A broken link or a special file (FIFO, device, socket) is refused up front: a FIFO
    would block the run before it reads a byte and cannot be cut into pieces, a device may never end."""
    try:
        st = os.stat(path)
    except OSError as err:
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise UserError(f"cannot read input {path}: {err.strerror}{broken}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"input {path} is {_special_kind(st.st_mode)}, not a regular file; prep reads regular files "
                        "only (copy the data to a file first)")
    return InputFile(path, kind[0], kind[1], st.st_size, display)


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
    return next((name for check, name in kinds if check(mode)), "a special file")


def _dataset_inputs(path: str, display: str) -> list[InputFile] | None:
    """The splits of a save_to_disk directory (sorted), or None when `path` is not one."""
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json")) as fh:
                splits = sorted(json.load(fh)["splits"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot read {path}/dataset_dict.json: {err}") from None
        return [_dataset(os.path.join(path, s), f"{display}/{s}") for s in splits]
    if os.path.isfile(os.path.join(path, "state.json")):
        return [_dataset(path, display)]
    return None


def _dataset(path: str, display: str) -> InputFile:
    return InputFile(path, "hf_dataset", None, sum(os.path.getsize(p) for p in _arrow_files(path)), display)


def _arrow_files(path: str) -> list[str]:
    """The data files of one saved dataset, in order, as listed by its state.json."""
    try:
        with open(os.path.join(path, "state.json")) as fh:
            names = [d["filename"] for d in json.load(fh)["_data_files"]]
        files = [os.path.join(path, n) for n in names]
        for p in files:
            os.stat(p)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a readable datasets save_to_disk directory: {err}") from None
    return files


# ------------------------------------------------------------------------------------------------ chunks


@dataclass(frozen=True)
class _Options:
    text_field: str
    id_field: str
    keep: tuple[str, ...]
    chunk_bytes: int
    strict: bool
    max_document_bytes: int

    @property
    def block_bytes(self) -> int:
        """Read block: near chunk_bytes, but big enough to parse fast and small enough for the cache."""
        return min(max(self.chunk_bytes, 1 << 16), 1 << 22)


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
) -> Iterator[Chunk]:
    """Read `files` in order and yield Chunks with a gapless `seq` starting at 0 (see the module docstring).

    A missing text field or kept column raises UserError; bad records, records longer than
    `max_document_bytes` and unreadable input are quarantined, or raise UserError when `strict`.
    """
    if chunk_bytes < 1 or max_document_bytes < 1:
        raise ValueError("chunk_bytes and max_document_bytes must be positive")
    keep = tuple(keep_columns)
    if {"id", "text"} & set(keep) or len(set(keep)) < len(keep):
        raise UserError(f"kept columns must be distinct and not named id or text: {', '.join(keep)}")
    opts = _Options(text_field, id_field, keep, chunk_bytes, strict, max_document_bytes)
    seq = itertools.count()
    for is_txt, group in itertools.groupby(files, key=lambda f: f.format == "txt"):
        if is_txt:
            yield from _txt_chunks(list(group), opts, seq)
            continue
        for f in group:
            packer = _Packer(f, opts, seq)
            for piece in _READERS[f.format](f, opts):
                yield from packer.add(piece)
            yield from packer.finish()


class _Packer:
    """Cuts one file's pieces into chunks of about chunk_bytes of text."""

    def __init__(self, f: InputFile, opts: _Options, seq: Iterator[int]) -> None:
        self.f, self.opts, self.seq = f, opts, seq
        self.rows: pa.Table | None = None
        self.sizes = _NO_POSITIONS  # text bytes of each pending row
        self.positions = _NO_POSITIONS
        self.raw_ends = _NO_POSITIONS  # estimated input offset at the end of each pending row
        self.quarantine: list[dict] = []
        self.raw_seen = 0
        self.raw_done = 0

    def add(self, piece: _Piece) -> Iterator[Chunk]:
        if piece.quarantine and self.opts.strict:
            raise _strict_error(self.f, piece.quarantine[0])
        n = piece.rows.num_rows
        if self.rows is None or not self.rows.num_rows:
            if piece.rows.num_columns:
                self.rows = piece.rows
        elif n:
            self.rows = pa.concat_tables([self.rows, piece.rows])
        if n:
            sizes = pc.binary_length(piece.rows.column(1)).to_numpy().astype(np.int64)
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
        rows = self.rows if self.rows is not None else _empty_rows(self.opts.keep)  # bad records only
        batch = _to_batch(rows.slice(0, end - start))
        self.rows = rows.slice(end - start)
        input_bytes, self.raw_done = max(raw_end - self.raw_done, 0), max(raw_end, self.raw_done)
        origins = Origins(_KEY[self.f.format], self.positions[start:end], (self.f.display,))
        return Chunk(seq=next(self.seq), batch=batch, source=self.f.display,
                     text_bytes=int(self.sizes[start:end].sum()), input_bytes=input_bytes,
                     documents_in=batch.num_rows + len(quarantine), quarantine=quarantine, origins=origins)


def _empty_rows(keep: Sequence[str]) -> pa.Table:
    """No rows, for chunks of bad records only (kept columns of unknown type are null-typed)."""
    fields = [("id", pa.string()), ("text", pa.string())] + [(k, pa.null()) for k in keep]
    return pa.schema(fields).empty_table()


def _to_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=table.schema)


def _strict_error(f: InputFile, bad: dict) -> UserError:
    return UserError(f"{bad['source']}, {_UNIT[f.format]} {bad['position']}: {bad['reason']} (strict mode)")


def bad_record(file: str, unit: str, position: int, reason: str, raw: str | bytes) -> dict:
    """A `_quarantine.jsonl` record: the file, the record's line or row there (also as `position`, the older
    name), why, and the start of the record."""
    if isinstance(raw, bytes):
        raw = raw[:_HEAD].decode("utf-8", "replace")
    return {"source": file, "position": int(position), "reason": reason, "raw": raw[:RAW_CHARS], "file": file,
            unit: int(position)}


def _bad(f: InputFile, position: int, reason: str, raw: str | bytes) -> dict:
    return bad_record(f.display, _KEY[f.format], position, reason, raw)


def _too_long(f: InputFile, position: int, size: int, raw: bytes, opts: _Options) -> dict:
    return _bad(f, position, f"record of {size} bytes is longer than max_document_bytes ({opts.max_document_bytes})",
                raw)


def _fault(f: InputFile, position: int, err: BaseException) -> dict:
    return _bad(f, position, f"unreadable input: {err}", "")


def _missing_field(f: InputFile, field: str, names: Iterable[str], flag: str) -> UserError:
    fields = ", ".join(names)
    return UserError(f"no field {field!r} in {f.display}: fields are {fields}; choose one with {flag}")


def _check_fields(f: InputFile, names: Sequence[str], opts: _Options) -> None:
    """A text field or kept column absent from a file with records is a user error, not a bad record."""
    if opts.text_field not in names:
        raise _missing_field(f, opts.text_field, names, "--text-field")
    for k in opts.keep:
        if k not in names:
            raise _missing_field(f, k, names, "--keep-columns")


def _assemble(ids: pa.ChunkedArray | None, text: pa.ChunkedArray, kept: list[pa.ChunkedArray],
              positions: np.ndarray, f: InputFile, opts: _Options) -> pa.Table:
    """Rows as id (string; generated as display:position where missing), text, kept columns."""
    if ids is None:
        ids = pa.chunked_array([pa.nulls(len(text), pa.string())])
    elif ids.type != pa.string():
        try:
            ids = ids.cast(pa.string())
        except pa.ArrowNotImplementedError:  # a list, struct, map ... id: its JSON text, as for JSON Lines
            ids = pa.chunked_array([pa.array([_as_text(v) for v in ids.to_pylist()], pa.string())])
    if ids.null_count:
        generated = pc.binary_join_element_wise(f"{f.display}:", pa.array(positions).cast(pa.string()), "")
        ids = pc.coalesce(ids, generated)
    return pa.table([ids, text, *kept], names=["id", "text", *opts.keep])


def _invalid_utf8(values: pa.ChunkedArray) -> np.ndarray | None:
    """Mask of values that are not valid UTF-8 (binary values, or the strings anywhere in a string, list,
    struct ... value), or None when all are: one vectorised check, per value only when that fails."""
    binary = pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)
    try:
        if binary:
            values.cast(pa.string())
        else:
            values.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    if binary or pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        as_bytes = values.cast(pa.large_binary()).to_pylist()
        return np.array([v is not None and not _is_utf8(v) for v in as_bytes], dtype=bool)
    return np.array([not _is_valid(values.slice(i, 1)) for i in range(len(values))], dtype=bool)


def _is_valid(values: pa.ChunkedArray | pa.Table) -> bool:
    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _value(column: pa.ChunkedArray) -> object:
    """The one value of a column, as Python; strings as bytes, since they may not be valid UTF-8."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    try:
        return column.to_pylist()[0]
    except UnicodeDecodeError:  # a string inside a list, struct ...
        return "(not valid UTF-8)"


def _head(value: object) -> object:
    """A value as shown in a quarantine record: bytes decoded, long values cut."""
    if isinstance(value, bytes):
        return value[:_HEAD].decode("utf-8", "replace")
    return value[:_HEAD] if isinstance(value, str) else value


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _screen(table: pa.Table, positions: np.ndarray, as_text: Sequence[str], f: InputFile, opts: _Options,
            empty_id: bool = False) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Columnar rows (CSV, Parquet, dataset): quarantine null texts, texts over max_document_bytes and invalid
    UTF-8 in the `as_text` columns (which become strings) and in every other column holding strings, then
    shape the rest. `empty_id` treats an empty id as missing (CSV has no null)."""
    n = table.num_rows
    reasons = np.full(n, "", dtype=object)
    text = table.column(opts.text_field)
    null_text = pc.is_null(text).to_numpy(zero_copy_only=False)
    reasons[null_text] = f"null {opts.text_field!r}"
    sizes = pc.fill_null(pc.binary_length(text), 0).to_numpy()
    for i in np.flatnonzero(sizes > opts.max_document_bytes):
        reasons[i] = f"text of {sizes[i]} bytes is longer than max_document_bytes ({opts.max_document_bytes})"
    for name in table.column_names:
        column = table.column(name)
        if name not in as_text and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            continue  # a kept binary column stays binary
        mask = _invalid_utf8(column)
        if mask is not None:
            reasons[mask & (reasons == "")] = f"invalid UTF-8 in {name!r}"
    bad = np.flatnonzero(reasons != "")
    quarantine = []
    if len(bad):
        for i in bad:
            row = table.slice(int(i), 1)
            record = {name: _head(_value(row.column(name))) for name in row.column_names}
            raw = json.dumps(record, ensure_ascii=False, default=str)
            quarantine.append(_bad(f, positions[i], reasons[i], raw))
        keep_mask = reasons == ""
        table, positions = table.filter(pa.array(keep_mask)), positions[keep_mask]
    columns = {name: table.column(name) for name in table.column_names}
    for name in as_text:
        columns[name] = columns[name].cast(pa.string())
    ids = columns.get(opts.id_field)
    if ids is not None and empty_id:
        ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    rows = _assemble(ids, columns[opts.text_field], [columns[k] for k in opts.keep], positions, f, opts)
    return rows, positions, quarantine


# ----------------------------------------------------------------------------------------------- reading


def _open(f: InputFile) -> tuple[pa.NativeFile, pa.NativeFile]:
    """(raw file, decompressed stream): raw.tell() is how far into the file on disk the stream has read."""
    raw = pa.OSFile(f.path)
    return raw, (pa.CompressedInputStream(raw, f.compression) if f.compression else raw)


class _Long(NamedTuple):
    """A record longer than max_document_bytes, skipped: its first bytes (for the quarantine record) and size."""

    head: bytes
    size: int  # bytes, without the newline that ends it
    raw_end: int


class _Blocks:
    """Blocks of whole records (lines; CSV rows) of about `size` bytes, streamed from a possibly compressed
    file, with the BOM stripped; a record longer than `limit` comes as a `_Long` instead, having been read in
    pieces of `step` bytes and never held whole (at most `size + limit + step` bytes are). A read error ends
    the iteration and is kept in `error`: the complete records read before it are still yielded."""

    step = 1 << 18  # bytes per read: a read error loses at most this much before the fault

    def __init__(self, f: InputFile, size: int, csv: bool, limit: int) -> None:
        self.f, self.size, self.csv, self.limit = f, size, csv, limit
        self.error: BaseException | None = None

    def _ends(self, data: bytes, quotes_before: int) -> np.ndarray:
        """Offsets just past each record end in `data`."""
        if self.csv:
            return _csv_record_ends(data, quotes_before)
        return np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1

    def _cut(self, data: bytes, quotes_before: int) -> int:
        """Offset just past the last record end in `data`, 0 if none."""
        if not self.csv:
            return data.rfind(b"\n") + 1
        ends = _csv_record_ends(data, quotes_before)
        return int(ends[-1]) if len(ends) else 0

    def _first_end(self, data: bytes, quotes_before: int) -> int:
        """Offset just past the first record end in `data`, 0 if none."""
        if not self.csv:
            return data.find(b"\n") + 1
        ends = _csv_record_ends(data, quotes_before)
        return int(ends[0]) if len(ends) else 0

    def __iter__(self) -> Iterator[tuple[bytes, int] | _Long]:
        try:
            raw, stream = _open(self.f)
        except _READ_ERRORS as err:
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
        ends = self._ends(block, 0)
        starts = np.concatenate([[0], ends[:-1]])
        at = 0
        for i in np.flatnonzero(ends - starts - 1 > self.limit):
            first, last = int(starts[i]), int(ends[i])
            if first > at:
                yield block[at:first], raw_end
            yield _Long(block[first:first + _HEAD], last - first - 1, raw_end)
            at = last
        if at < len(block):
            yield block[at:], raw_end

    def _read(self, raw: pa.NativeFile, stream: pa.NativeFile) -> Iterator[tuple[bytes, int] | _Long]:
        parts: list[bytes] = []
        have = quotes = 0
        first = True
        long: list | None = None  # [head, size, quotes] of an over-long record being skipped
        while True:
            try:
                data = stream.read(min(self.step, self.size))
            except _READ_ERRORS as err:
                self.error = err
                break
            if first and data.startswith(_BOM):
                data = data[len(_BOM):]
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
            if have + len(data) >= self.size and (cut := self._cut(data, quotes)):
                rest = data[cut:]
                yield from self._split(b"".join([*parts, data[:cut]]), raw.tell())
                parts, have, quotes = [rest], len(rest), rest.count(b'"') if self.csv else 0
                continue
            parts.append(data)
            have += len(data)
            quotes += data.count(b'"') if self.csv else 0
            if have > self.size + self.limit:
                # Every record end held lies in the first `size` bytes: the open record is over the limit.
                pending = b"".join(parts)
                cut = self._cut(pending, 0)
                if cut:
                    yield from self._split(pending[:cut], raw.tell())
                long = [pending[cut:cut + _HEAD], len(pending) - cut, pending.count(b'"', cut) if self.csv else 0]
                parts, have, quotes = [], 0, 0
        if long is not None and self.error is None:  # the last record, without a newline
            yield _Long(long[0], long[1], raw.tell())
        tail = b"".join(parts)
        if self.error is not None:
            tail = tail[: self._cut(tail, 0)]  # an incomplete last record is part of the unreadable rest
        elif tail and not tail.endswith(b"\n"):
            tail += b"\n"
        if tail:
            yield from self._split(tail, raw.tell())


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
        except _READ_ERRORS as err:
            self.error = err


def _fault_piece(f: InputFile, error: BaseException, position: int) -> _Piece:
    return _Piece(pa.table({}), _NO_POSITIONS, f.size, [_fault(f, position, error)])


# ----- JSON Lines


def _read_jsonl(f: InputFile, opts: _Options) -> Iterator[_Piece]:
    parser = _JsonlParser(f, opts)
    blocks = _Blocks(f, opts.block_bytes, csv=False, limit=opts.max_document_bytes)
    line = 1
    for item in blocks:
        if isinstance(item, _Long):
            yield _Piece(pa.table({}), _NO_POSITIONS, item.raw_end, [_too_long(f, line, item.size, item.head, opts)])
            line += 1
            continue
        block, raw_end = item
        rows, positions, bad = parser.parse(block, line)
        line += block.count(b"\n")
        yield _Piece(rows, positions, raw_end, bad)
    if blocks.error is not None:
        yield _fault_piece(f, blocks.error, line)


class _JsonlParser:
    """Parses blocks of JSON lines; column types are learnt from the file's first block, then fixed."""

    def __init__(self, f: InputFile, opts: _Options) -> None:
        self.f, self.opts = f, opts
        self.types: dict[str, pa.DataType] | None = None  # text, id (when present), kept columns
        self.options = pajson.ParseOptions(unexpected_field_behavior="infer")

    def parse(self, block: bytes, first_line: int) -> tuple[pa.Table, np.ndarray, list[dict]]:
        table = self._read(block)
        if table is not None and self.types is None and table.num_rows:
            self._learn(table.column_names, {field.name: field.type for field in table.schema})
            table = self._read(block)
        if table is not None and self.types is not None:
            fast = self._fast(table, block, first_line)
            if fast is not None:
                return fast
        return self._slow(block, first_line)

    def _read(self, block: bytes) -> pa.Table | None:
        try:
            options = pajson.ReadOptions(use_threads=False, block_size=len(block) + 1)
            return pajson.read_json(pa.BufferReader(block), read_options=options, parse_options=self.options)
        except (pa.ArrowException, ValueError):  # bad JSON; bad UTF-8 surfaces as UnicodeDecodeError
            return None

    def _learn(self, names: Sequence[str], types: dict[str, pa.DataType]) -> None:
        """Fix the schema for the rest of the file: one schema for all its chunks. JSON has no timestamps, so
        inferred ones stay strings, and so do columns that are null throughout the first block."""
        _check_fields(self.f, names, self.opts)

        def plain(t: pa.DataType) -> pa.DataType:
            return pa.string() if pa.types.is_null(t) or pa.types.is_timestamp(t) else t

        id_type = plain(types.get(self.opts.id_field, pa.null()))
        fields = {self.opts.text_field: pa.string(),
                  self.opts.id_field: id_type if pa.types.is_integer(id_type) else pa.string()}
        for k in self.opts.keep:
            fields.setdefault(k, plain(types[k]))
        self.types = fields
        self.options = pajson.ParseOptions(explicit_schema=pa.schema(list(fields.items())),
                                           unexpected_field_behavior="ignore")

    def _fast(self, table: pa.Table, block: bytes, first_line: int) -> tuple | None:
        """The block as pyarrow parsed it, or None when a line needs a closer look."""
        text = table.column(self.opts.text_field)
        if text.null_count or not _is_valid(table):  # e.g. invalid UTF-8 inside a string: found line by line
            return None
        if table.num_rows == block.count(b"\n"):
            positions = first_line + np.arange(table.num_rows, dtype=np.int64)
        else:
            positions = _record_lines(block, first_line)
            if len(positions) != table.num_rows:
                return None
        ids = table.column(self.opts.id_field)
        kept = [table.column(k) for k in self.opts.keep]
        return _assemble(ids, text, kept, positions, self.f, self.opts), positions, []

    def _slow(self, block: bytes, first_line: int) -> tuple[pa.Table, np.ndarray, list[dict]]:
        """Line by line with json.loads: quarantine exactly the bad lines, keep the rest."""
        tf, idf = self.opts.text_field, self.opts.id_field
        records: list[dict] = []
        lines: list[int] = []
        raws: list[bytes] = []
        quarantine = []
        for i, line in enumerate(block.split(b"\n")):
            if not line.strip(b" \t\r"):  # blank: JSON whitespace only
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                reason = "invalid UTF-8"
            except (ValueError, RecursionError) as err:
                reason = f"malformed JSON: {err}"
            else:
                reason = _record_problem(obj, tf)
            if reason:
                quarantine.append(_bad(self.f, first_line + i, reason, line.rstrip(b"\r")))
            else:
                records.append(obj)
                lines.append(first_line + i)
                raws.append(line)
        if self.types is None and records:
            names = list(dict.fromkeys(k for r in records for k in r))
            self._learn(names, {n: _infer([r.get(n) for r in records]) for n in names})
        if self.types is None:  # nothing usable yet: bad lines only
            return _empty_rows(self.opts.keep), _NO_POSITIONS, quarantine
        columns = {"text": [r[tf] for r in records], "id": [_as_text(r.get(idf)) for r in records]}
        types = {"text": pa.string(), "id": pa.string()}
        for k in self.opts.keep:
            values = [r.get(k) for r in records]
            columns[k] = [_as_text(v) for v in values] if self.types[k] == pa.string() else values
            types[k] = self.types[k]
        labels = {"text": tf, "id": idf}
        reasons = np.full(len(records), "", dtype=object)
        for name, values in columns.items():
            unfit = [i for i in _unfit(values, types[name]) if not reasons[i]]
            reasons[unfit] = _unfit_reason(labels.get(name, name), types[name])
        if (reasons != "").any():
            quarantine += [_bad(self.f, lines[i], reasons[i], raws[i].rstrip(b"\r"))
                           for i in np.flatnonzero(reasons != "")]
            quarantine.sort(key=lambda q: q["position"])
            good = np.flatnonzero(reasons == "")
            columns = {n: [v[i] for i in good] for n, v in columns.items()}
            lines = [lines[i] for i in good]
        arrays = {n: pa.chunked_array([pa.array(v, types[n])]) for n, v in columns.items()}
        positions = np.array(lines, dtype=np.int64)
        rows = _assemble(arrays["id"], arrays["text"], [arrays[k] for k in self.opts.keep], positions, self.f,
                         self.opts)
        return rows, positions, quarantine


def _record_problem(obj: object, text_field: str) -> str:
    """Why a parsed JSON value cannot be a document ("" when it can)."""
    if not isinstance(obj, dict):
        return f"not a JSON object ({_json_type(obj)})"
    if text_field not in obj:
        return f"no field {text_field!r}"
    text = obj[text_field]
    if text is None:
        return f"null {text_field!r}"
    if not isinstance(text, str):
        return f"{text_field!r} is {_json_type(text)}, not a string"
    return ""


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), "null")


def _as_text(value: object) -> str | None:
    """A value for a string column (ids; kept columns typed string, e.g. null in the first block): strings
    as they are, other JSON values as JSON (5 -> "5"), null stays null."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _infer(values: list) -> pa.DataType:
    try:
        return pa.array(values).type
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return pa.string()


def _unfit(values: list, type_: pa.DataType) -> list[int]:
    """Indices of values that cannot be stored as `type_` (e.g. strings with lone surrogates); one vectorised
    try, per value only when it fails."""
    errors = (pa.ArrowException, ValueError, TypeError, OverflowError)
    try:
        pa.array(values, type_)
        return []
    except errors:
        pass
    bad = []
    for i, v in enumerate(values):
        try:
            pa.array([v], type_)
        except errors:
            bad.append(i)
    return bad


def _unfit_reason(field: str, type_: pa.DataType) -> str:
    if type_ == pa.string():
        return f"{field!r} is not valid Unicode (lone surrogate)"
    return f"{field!r} does not fit the column type {type_}"


def _record_lines(block: bytes, first_line: int) -> np.ndarray:
    """Line numbers of the non-blank lines of a block (blank: only spaces, tabs, CR), vectorised."""
    a = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    content = np.concatenate([[0], np.cumsum((a != 32) & (a != 9) & (a != 13) & (a != 10))])
    return first_line + np.flatnonzero(content[ends] > content[starts]).astype(np.int64)


# ----- CSV


def _csv_record_ends(data: bytes, quotes_before: int) -> np.ndarray:
    """Offsets just past each newline of `data` that ends a CSV record: one outside quotes, i.e. after an
    even number of quote characters (pyarrow's default dialect: "" escapes a quote)."""
    a = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(a == 10)
    even = (np.searchsorted(np.flatnonzero(a == 34), newlines) + quotes_before) % 2 == 0
    return newlines[even] + 1


def _read_csv(f: InputFile, opts: _Options) -> Iterator[_Piece]:
    """CSV with a header row. Values are read as text: CSV has no types, so kept columns are strings too."""
    blocks = _Blocks(f, opts.block_bytes, csv=True, limit=opts.max_document_bytes)
    names: list[str] | None = None
    columns: list[str] = []
    row = 0  # data rows (records after the header) met so far
    for item in blocks:
        if isinstance(item, _Long):
            if names is None:  # the header: the file cannot be read
                yield _Piece(pa.table({}), _NO_POSITIONS, f.size, [_too_long(f, 0, item.size, item.head, opts)])
                return
            row += 1
            yield _Piece(pa.table({}), _NO_POSITIONS, item.raw_end, [_too_long(f, row, item.size, item.head, opts)])
            continue
        block, raw_end = item
        if names is None:
            ends = _csv_record_ends(block, 0)
            header_end = int(ends[0]) if len(ends) else len(block)
            try:
                names = pacsv.read_csv(pa.py_buffer(block[:header_end])).column_names
            except pa.ArrowInvalid as err:
                yield _fault_piece(f, err, 0)
                return
            block = block[header_end:]
            columns = [c for c in dict.fromkeys((opts.id_field, opts.text_field, *opts.keep)) if c in names]
        if not block.strip(b"\r\n"):  # pyarrow skips empty lines
            continue
        _check_fields(f, names, opts)
        invalid: list[tuple[int, str, str]] = []

        def skip(bad_row: pacsv.InvalidRow, invalid: list = invalid) -> str:
            invalid.append((bad_row.number, f"expected {bad_row.expected_columns} fields, found "
                                            f"{bad_row.actual_columns}", bad_row.text))
            return "skip"

        try:
            table = pacsv.read_csv(
                pa.BufferReader(block),
                read_options=pacsv.ReadOptions(use_threads=False, block_size=len(block) + 1,
                                               column_names=names),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
                convert_options=pacsv.ConvertOptions(include_columns=columns,
                                                     column_types=dict.fromkeys(columns, pa.binary())))
        except pa.ArrowInvalid as err:  # e.g. an unbalanced quote: the rest of the file cannot be split
            yield _fault_piece(f, err, row + 1)
            return
        numbers = np.arange(1, table.num_rows + len(invalid) + 1)
        positions = row + numbers[~np.isin(numbers, [n for n, _, _ in invalid])]
        rows, positions, quarantine = _screen(table, positions, columns, f, opts, empty_id=True)
        quarantine += [_bad(f, row + n, reason, text) for n, reason, text in invalid]
        quarantine.sort(key=lambda q: q["position"])
        row += len(numbers)
        yield _Piece(rows, positions, raw_end, quarantine)
    if blocks.error is not None:
        yield _fault_piece(f, blocks.error, row + 1)


# ----- Parquet and datasets


def _read_columnar(f: InputFile, opts: _Options, batches: Callable[[], Iterator[tuple[pa.Table, int]]]) \
        -> Iterator[_Piece]:
    """Pieces from (rows, raw_end) batches of a Parquet file or a saved dataset; position = 0-based row."""
    guard = _Guard(batches)
    row = 0
    for table, raw_end in guard:
        positions = row + np.arange(table.num_rows, dtype=np.int64)
        row += table.num_rows
        as_text = [c for c in dict.fromkeys((opts.text_field, opts.id_field))
                   if c in table.column_names and _is_text_type(table.schema.field(c).type)]
        rows, positions, quarantine = _screen(table, positions, as_text, f, opts)
        yield _Piece(rows, positions, raw_end, quarantine)
    if guard.error is not None:
        yield _fault_piece(f, guard.error, row)


def _columns(f: InputFile, schema: pa.Schema, rows: int, opts: _Options) -> list[str]:
    """Columns to read from a typed source; the text must be a string or binary column."""
    if rows:
        _check_fields(f, schema.names, opts)
        text_type = schema.field(opts.text_field).type
        if not _is_text_type(text_type):
            raise UserError(f"field {opts.text_field!r} in {f.display} is {text_type}, not text; "
                            "choose another with --text-field")
    return list(dict.fromkeys(c for c in (opts.id_field, opts.text_field, *opts.keep) if c in schema.names))


def _is_text_type(type_: pa.DataType) -> bool:
    return any(check(type_) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                          pa.types.is_large_binary))


def _rows_per_batch(text_bytes: int, rows: int, opts: _Options) -> int:
    """Rows per read batch for about one chunk of text, from the average text size."""
    return int(min(max(opts.chunk_bytes * rows // max(text_bytes, 1), 1), 1 << 16))


def _read_parquet(f: InputFile, opts: _Options) -> Iterator[_Piece]:
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


def _read_dataset(f: InputFile, opts: _Options) -> Iterator[_Piece]:
    def batches() -> Iterator[tuple[pa.Table, int]]:
        offset = 0
        for path in _arrow_files(f.path):
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


def _txt_chunks(files: list[InputFile], opts: _Options, seq: Iterator[int]) -> Iterator[Chunk]:
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
                content: bytes | BaseException = stream.read(opts.max_document_bytes + len(_BOM) + 1)
        except _READ_ERRORS as err:
            content = err
        if isinstance(content, bytes):
            content = content.removeprefix(_BOM)
            if len(content) > opts.max_document_bytes:
                content = _TooLong(content[:_HEAD])
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


def _txt_chunk(group: list[tuple[InputFile, bytes | BaseException]], opts: _Options,
               seq: Iterator[int]) -> Iterator[Chunk]:
    """The chunk of a group of text files; empty files are no documents, unreadable and too long ones are
    quarantined."""
    docs = [(f, c) for f, c in group if isinstance(c, bytes) and c]
    texts = pa.chunked_array([pa.array([c for _, c in docs], pa.binary())], pa.binary())
    invalid = _invalid_utf8(texts)
    invalid = np.zeros(len(docs), dtype=bool) if invalid is None else invalid
    bad_docs = {docs[i][0].path for i in np.flatnonzero(invalid)}

    def bad(f: InputFile, c: bytes | BaseException) -> dict:
        if isinstance(c, _TooLong):
            return _bad(f, 0, f"file longer than max_document_bytes ({opts.max_document_bytes})", c.head)
        return _fault(f, 0, c) if isinstance(c, BaseException) else _bad(f, 0, "invalid UTF-8", c)

    quarantine = [bad(f, c) for f, c in group if isinstance(c, BaseException) or f.path in bad_docs]
    if quarantine and opts.strict:
        raise _strict_error(group[0][0], quarantine[0])
    if not docs and not quarantine:
        return
    text = texts.filter(pa.array(~invalid)).cast(pa.string())
    displays = [docs[i][0].display for i in np.flatnonzero(~invalid)]
    ids = pa.chunked_array([pa.array(displays, pa.string())])
    rows = _assemble(ids, text, [], _NO_POSITIONS, group[0][0], opts)
    yield Chunk(seq=next(seq), batch=_to_batch(rows), source=group[0][0].display,
                text_bytes=int(pc.sum(pc.binary_length(text)).as_py() or 0),
                input_bytes=sum(f.size for f, _ in group), documents_in=rows.num_rows + len(quarantine),
                quarantine=quarantine, origins=Origins("row", np.zeros(len(displays), np.int64), tuple(displays)))


_READERS: dict[str, Callable[[InputFile, _Options], Iterator[_Piece]]] = {
    "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet, "hf_dataset": _read_dataset,
}
