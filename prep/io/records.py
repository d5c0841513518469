"""Records: the parsing of raw input into rows of id, text and kept columns, with bad records set aside.

This is the per-document work of reading JSON Lines and CSV, and the screening every format shares. The Source
only cuts input into chunks of whole records; a worker (or, for tools, the Source itself) turns a raw chunk
into rows here (Parquet, datasets and .txt pieces through `prep.io.pieces`). JSON Lines is parsed block by block by
pyarrow's JSON reader with the file's column types, which the Source learns once from the file's start; only a
block that pyarrow refuses (bad line, type change, bad UTF-8, lone surrogate), that holds invalid UTF-8 inside
a string, or whose rows cannot be matched to their lines is re-read line by line with `json.loads`, to
quarantine exactly the bad lines. Every string column is checked to be valid UTF-8 (vectorised per block, per
row only when that fails).

Positions (in quarantine records and generated ids `display:position`): the 1-based line for JSON Lines, the
1-based data row for CSV, the 0-based row index for Parquet and datasets, 0 for a text file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from prep.config import PipelineConfig
from prep.core.chunk import Origins, RawSpec
from prep.errors import UserError
from prep.io.inputs import InputFile
from prep.text.arrow import numpy_of, utf8_of

RAW_CHARS = 1000  # quarantine records keep at most this much of the raw record
MAX_DOCUMENT_BYTES = 64 * 2**20  # a longer record is quarantined, read in bounded pieces, never held whole
UNIT = {"jsonl": "line", "csv": "row", "parquet": "row", "hf_dataset": "row", "txt": "file"}
# the key of a position in quarantine records
POSITION_KEY = {"jsonl": "line", "csv": "row", "parquet": "row", "hf_dataset": "row", "txt": "row"}
HEAD_BYTES = 4 * RAW_CHARS  # bytes kept of an over-long record: enough for RAW_CHARS characters
BOM = b"\xef\xbb\xbf"
READ_ERRORS = (OSError, EOFError, pa.ArrowException)  # EOFError: a truncated gzip stream
NO_POSITIONS = np.zeros(0, np.int64)
LEARN_BYTES = 1 << 16  # a JSON Lines file's column types are learnt from this much of its start


@dataclass(frozen=True)
class ReadOptions:
    """How records are read: the fields, the chunk size, and what to do with bad ones."""

    text_field: str
    id_field: str
    keep: tuple[str, ...]
    chunk_bytes: int
    strict: bool
    max_document_bytes: int

    @classmethod
    def of(cls, config: PipelineConfig) -> ReadOptions:
        return cls(config.text_field, config.id_field, tuple(config.keep_columns), config.chunk_bytes,
                   config.strict, config.max_document_bytes)


def value_sizes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Bytes of each value of a string or binary column, from its offsets (a null's is whatever its offsets say):
    pc.fill_null and pa.array import pandas on first use, which the coordinator need not pay."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    sizes = [np.zeros(0, np.int64)]
    for chunk in chunks:
        if len(chunk):
            sizes.append(np.diff(utf8_of(chunk)[1]))
    return np.concatenate(sizes)


def empty_rows(keep: Sequence[str]) -> pa.Table:
    """No rows, for chunks of bad records only (kept columns of unknown type are null-typed)."""
    fields = [("id", pa.string()), ("text", pa.string())] + [(k, pa.null()) for k in keep]
    return pa.schema(fields).empty_table()


def to_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=table.schema)


def strict_error(f: InputFile, bad: dict) -> UserError:
    return UserError(f"{bad['source']}, {UNIT[f.format]} {bad['position']}: {bad['reason']} (strict mode)")


# ------------------------------------------------------------------------------------------ raw chunks


def raw_batch(data: bytes) -> pa.RecordBatch:
    """A raw chunk's records as the one-row batch that travels (shared memory, Ray's object store) like any."""
    offsets = pa.py_buffer(np.array([0, len(data)], np.int64))
    column = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])  # no copy
    return pa.RecordBatch.from_arrays([column], names=["data"])


def raw_data(batch: pa.RecordBatch) -> bytes:
    return batch.column(0)[0].as_py()


def raw_buffer(batch: pa.RecordBatch) -> pa.Buffer:
    """A raw chunk's records in place (in a worker: in its shared-memory slot), where `raw_data` copies them."""
    column = batch.column(0)
    start, end = np.frombuffer(column.buffers()[1], np.int64, 2, column.offset * 8)
    return column.buffers()[2].slice(int(start), int(end - start))


def _unit_bounds(data: bytes, fmt: str) -> np.ndarray:
    """Offset of each record's start, then of the end: records [a, b) of a raw chunk are data[o[a]:o[b]]."""
    ends = csv_record_ends(data, 0) if fmt == "csv" else np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
    return np.concatenate([[0], ends]).astype(np.int64)


def counted_records(data: bytes, fmt: str) -> int:
    """The records of `data` that take a position: for CSV, the non-empty ones (pyarrow skips empty lines and
    does not number them); for JSON Lines, every line (blank ones are numbered, though they are no record)."""
    if fmt != "csv":
        return int(np.count_nonzero(np.frombuffer(data, np.uint8) == 10))
    bounds = _unit_bounds(data, fmt)
    starts, length = bounds[:-1], np.diff(bounds)
    empty = length == 1
    two = length == 2
    empty[two] = np.frombuffer(data, np.uint8)[starts[two]] == 13  # "\r\n" alone
    return int(len(length) - np.count_nonzero(empty))


def raw_record(batch: pa.RecordBatch, spec: RawSpec, index: int) -> tuple[int, bytes]:
    """Position and bytes (without the line end) of record `index` of a raw chunk: a poison record, for its
    quarantine record."""
    data = raw_data(batch)
    bounds = _unit_bounds(data, spec.format)
    position = spec.first + counted_records(data[:bounds[index]], spec.format)
    return position, data[bounds[index]:bounds[index + 1]].rstrip(b"\r\n")


@dataclass
class Parsed:
    """Lines [start, stop) of a raw chunk, parsed: the rows, where each came from, the bad records, and what
    the chunk's accounting needs (records met, text bytes)."""

    batch: pa.RecordBatch
    origins: Origins
    quarantine: list[dict]
    documents_in: int
    text_bytes: int


def parse_raw(data: bytes | pa.Buffer, spec: RawSpec, opts: ReadOptions, start: int = 0,
              stop: int | None = None) -> Parsed:
    """The worker's half of reading JSON Lines and CSV: parse, validate and shape records [start, stop) of a raw
    chunk. A pure function of the bytes and the file's types (or CSV header), so any worker (or a retry) gives
    the same rows."""
    stop = spec.units if stop is None else stop
    first = spec.first
    if (start, stop) != (0, spec.units):
        bounds = _unit_bounds(data, spec.format)
        first += counted_records(data[:int(bounds[start])], spec.format)
        data = data[int(bounds[start]):int(bounds[stop])]
    f = InputFile("", spec.format, None, 0, spec.source)
    if spec.format == "csv":
        rows, positions, quarantine = parse_csv(bytes(data), first, spec.schema.names, f, opts)
    else:
        rows, positions, quarantine = JsonlParser(f, opts, spec.schema).parse(data, first)
    return parsed_rows(rows, Origins(POSITION_KEY[spec.format], positions, (spec.source,)), quarantine)


def parsed_rows(rows: pa.Table, origins: Origins, quarantine: list[dict]) -> Parsed:
    """Rows a worker read, with what the chunk's accounting needs: records met and their text bytes."""
    batch = to_batch(rows)
    text_bytes = int(pc.sum(pc.binary_length(batch.column(1))).as_py() or 0)
    return Parsed(batch, origins, quarantine, batch.num_rows + len(quarantine), text_bytes)


def strict_record_error(bad: dict, fmt: str) -> UserError:
    """--strict: a bad record a worker found in a raw chunk of format `fmt` ends the run, said as the Source
    says it."""
    return UserError(f"{bad['source']}, {UNIT[fmt]} {bad['position']}: {bad['reason']} (strict mode)")


def bad_record(file: str, unit: str, position: int, reason: str, raw: str | bytes) -> dict:
    """A `_quarantine.jsonl` record: the file, the record's line or row there (also as `position`, the older
    name), why, and the start of the record."""
    if isinstance(raw, bytes):
        raw = raw[:HEAD_BYTES].decode("utf-8", "replace")
    return {"source": file, "position": int(position), "reason": reason, "raw": raw[:RAW_CHARS], "file": file,
            unit: int(position)}


def file_record(f: InputFile, position: int, reason: str, raw: str | bytes) -> dict:
    return bad_record(f.display, POSITION_KEY[f.format], position, reason, raw)


def too_long_record(f: InputFile, position: int, size: int, raw: bytes, opts: ReadOptions) -> dict:
    limit = opts.max_document_bytes
    return file_record(f, position, f"record of {size} bytes is longer than max_document_bytes ({limit})", raw)


def fault_record(f: InputFile, position: int, err: BaseException) -> dict:
    return file_record(f, position, f"unreadable input: {err}", "")


def _missing_field(f: InputFile, field: str, names: Iterable[str], flag: str) -> UserError:
    fields = ", ".join(names)
    return UserError(f"no field {field!r} in {f.display}: fields are {fields}; choose one with {flag}")


def check_fields(f: InputFile, names: Sequence[str], opts: ReadOptions) -> None:
    """A text field or kept column absent from a file with records is a user error, not a bad record."""
    if opts.text_field not in names:
        raise _missing_field(f, opts.text_field, names, "--text-field")
    for k in opts.keep:
        if k not in names:
            raise _missing_field(f, k, names, "--keep-columns")


def assemble_rows(ids: pa.ChunkedArray | None, text: pa.ChunkedArray, kept: list[pa.ChunkedArray],
              positions: np.ndarray, f: InputFile, opts: ReadOptions) -> pa.Table:
    """Rows as id (string; generated as display:position where missing), text, kept columns."""
    if ids is None:
        ids = pa.chunked_array([pa.nulls(len(text), pa.string())])
    elif ids.type != pa.string():
        try:
            ids = ids.cast(pa.string())
        except pa.ArrowNotImplementedError:  # a list, struct, map ... id: its JSON text, as for JSON Lines
            ids = pa.chunked_array([pa.array([as_text(v) for v in ids.to_pylist()], pa.string())])
    if ids.null_count:
        generated = pc.binary_join_element_wise(f"{f.display}:", pa.array(positions).cast(pa.string()), "")
        ids = pc.coalesce(ids, generated)
    return pa.table([ids, text, *kept], names=["id", "text", *opts.keep])


def invalid_utf8(values: pa.ChunkedArray) -> np.ndarray | None:
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


def is_text_type(type_: pa.DataType) -> bool:
    """A column that can hold the text (or an id read as text): string or binary."""
    return any(check(type_) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                          pa.types.is_large_binary))


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
        return value[:HEAD_BYTES].decode("utf-8", "replace")
    return value[:HEAD_BYTES] if isinstance(value, str) else value


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def screen_columns(table: pa.Table, positions: np.ndarray, as_text: Sequence[str], f: InputFile, opts: ReadOptions,
            empty_id: bool = False) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Columnar rows (CSV, Parquet, dataset): quarantine null texts, texts over max_document_bytes and invalid
    UTF-8 in the `as_text` columns (which become strings) and in every other column holding strings, then
    shape the rest. `empty_id` treats an empty id as missing (CSV has no null)."""
    n = table.num_rows
    reasons = np.full(n, "", dtype=object)
    text = table.column(opts.text_field)
    null_text = numpy_of(pc.is_null(text))
    reasons[null_text] = f"null {opts.text_field!r}"
    sizes = value_sizes(text)
    sizes[null_text] = 0
    for i in np.flatnonzero(sizes > opts.max_document_bytes):
        reasons[i] = f"text of {sizes[i]} bytes is longer than max_document_bytes ({opts.max_document_bytes})"
    for name in table.column_names:
        column = table.column(name)
        if name not in as_text and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            continue  # a kept binary column stays binary
        mask = invalid_utf8(column)
        if mask is not None:
            reasons[mask & (reasons == "")] = f"invalid UTF-8 in {name!r}"
    bad = np.flatnonzero(reasons != "")
    quarantine = []
    if len(bad):
        for i in bad:
            row = table.slice(int(i), 1)
            record = {name: _head(_value(row.column(name))) for name in row.column_names}
            raw = json.dumps(record, ensure_ascii=False, default=str)
            quarantine.append(file_record(f, positions[i], reasons[i], raw))
        keep_mask = reasons == ""
        table, positions = table.filter(pa.array(keep_mask)), positions[keep_mask]
    columns = {name: table.column(name) for name in table.column_names}
    for name in as_text:
        columns[name] = columns[name].cast(pa.string())
    ids = columns.get(opts.id_field)
    if ids is not None and empty_id:
        ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    rows = assemble_rows(ids, columns[opts.text_field], [columns[k] for k in opts.keep], positions, f, opts)
    return rows, positions, quarantine


class JsonlParser:
    """Parses blocks of JSON lines; column types are learnt from the file's first records (by the Source, which
    hands them to the workers as `schema`), then fixed: one schema for all the file's chunks."""

    def __init__(self, f: InputFile, opts: ReadOptions, schema: pa.Schema | None = None) -> None:
        self.f, self.opts = f, opts
        self.types: dict[str, pa.DataType] | None = None  # text, id (when present), kept columns
        self.schema: pa.Schema | None = None  # the same, built once: every chunk of the file carries it
        self.options = pajson.ParseOptions(unexpected_field_behavior="infer")
        if schema is not None:
            self._use(dict(zip(schema.names, schema.types, strict=True)))

    def learn(self, block: bytes) -> None:
        """Learn the types from the first LEARN_BYTES of whole lines of a block, or from all of it when those
        hold no usable record: a bounded cost for the Source, whatever the file's size."""
        cut = block.rfind(b"\n", 0, LEARN_BYTES) + 1 or len(block)
        for sample in (block[:cut], block) if cut < len(block) else (block[:cut],):
            table = self._read(sample)
            if table is not None and table.num_rows:
                self._learn(table.column_names, {field.name: field.type for field in table.schema})
                return
            records = [obj for obj in _json_values(sample) if not _record_problem(obj, self.opts.text_field)]
            if records:  # a bad line among them: the good ones, read one by one, as the slow path learns
                names = list(dict.fromkeys(k for r in records for k in r))
                self._learn(names, {n: _infer([r.get(n) for r in records]) for n in names})
                return

    def parse(self, block: bytes | pa.Buffer, first_line: int) -> tuple[pa.Table, np.ndarray, list[dict]]:
        table = self._read(block)
        if table is not None and self.types is None and table.num_rows:
            self._learn(table.column_names, {field.name: field.type for field in table.schema})
            table = self._read(block)
        if table is not None and self.types is not None:
            fast = self._fast(table, block, first_line)
            if fast is not None:
                return fast
        return self._slow(bytes(block), first_line)

    def _read(self, block: bytes | pa.Buffer) -> pa.Table | None:
        try:
            options = pajson.ReadOptions(use_threads=False, block_size=len(block) + 1)
            return pajson.read_json(pa.BufferReader(block), read_options=options, parse_options=self.options)
        except (pa.ArrowException, ValueError):  # bad JSON; bad UTF-8 surfaces as UnicodeDecodeError
            return None

    def _learn(self, names: Sequence[str], types: dict[str, pa.DataType]) -> None:
        """Fix the schema for the rest of the file: one schema for all its chunks. JSON has no timestamps, so
        inferred ones stay strings, and so do columns that are null throughout the first block."""
        check_fields(self.f, names, self.opts)

        def plain(t: pa.DataType) -> pa.DataType:
            return pa.string() if pa.types.is_null(t) or pa.types.is_timestamp(t) else t

        id_type = plain(types.get(self.opts.id_field, pa.null()))
        fields = {self.opts.text_field: pa.string(),
                  self.opts.id_field: id_type if pa.types.is_integer(id_type) else pa.string()}
        for k in self.opts.keep:
            fields.setdefault(k, plain(types[k]))
        self._use(fields)

    def _use(self, fields: dict[str, pa.DataType]) -> None:
        self.types = fields
        self.schema = pa.schema(list(fields.items()))
        self.options = pajson.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore")

    def _fast(self, table: pa.Table, block: bytes | pa.Buffer, first_line: int) -> tuple | None:
        """The block as pyarrow parsed it, or None when a line needs a closer look."""
        text = table.column(self.opts.text_field)
        if text.null_count or not _is_valid(table):  # e.g. invalid UTF-8 inside a string: found line by line
            return None
        if table.num_rows == counted_records(block, "jsonl"):
            positions = first_line + np.arange(table.num_rows, dtype=np.int64)
        else:
            positions = record_lines(block, first_line)
            if len(positions) != table.num_rows:
                return None
        ids = table.column(self.opts.id_field)
        kept = [table.column(k) for k in self.opts.keep]
        return assemble_rows(ids, text, kept, positions, self.f, self.opts), positions, []

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
                quarantine.append(file_record(self.f, first_line + i, reason, line.rstrip(b"\r")))
            else:
                records.append(obj)
                lines.append(first_line + i)
                raws.append(line)
        if self.types is None and records:
            names = list(dict.fromkeys(k for r in records for k in r))
            self._learn(names, {n: _infer([r.get(n) for r in records]) for n in names})
        if self.types is None:  # nothing usable yet: bad lines only
            return empty_rows(self.opts.keep), NO_POSITIONS, quarantine
        columns = {"text": [r[tf] for r in records], "id": [as_text(r.get(idf)) for r in records]}
        types = {"text": pa.string(), "id": pa.string()}
        for k in self.opts.keep:
            values = [r.get(k) for r in records]
            columns[k] = [as_text(v) for v in values] if self.types[k] == pa.string() else values
            types[k] = self.types[k]
        labels = {"text": tf, "id": idf}
        reasons = np.full(len(records), "", dtype=object)
        for name, values in columns.items():
            unfit = [i for i in _unfit(values, types[name]) if not reasons[i]]
            reasons[unfit] = _unfit_reason(labels.get(name, name), types[name])
        if (reasons != "").any():
            quarantine += [file_record(self.f, lines[i], reasons[i], raws[i].rstrip(b"\r"))
                           for i in np.flatnonzero(reasons != "")]
            quarantine.sort(key=lambda q: q["position"])
            good = np.flatnonzero(reasons == "")
            columns = {n: [v[i] for i in good] for n, v in columns.items()}
            lines = [lines[i] for i in good]
        arrays = {n: pa.chunked_array([pa.array(v, types[n])]) for n, v in columns.items()}
        positions = np.array(lines, dtype=np.int64)
        rows = assemble_rows(arrays["id"], arrays["text"], [arrays[k] for k in self.opts.keep], positions, self.f,
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


def as_text(value: object) -> str | None:
    """A value for a string column (ids; kept columns typed string, e.g. null in the first block): strings
    as they are, other JSON values as JSON (5 -> "5"), null stays null."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _json_values(block: bytes) -> Iterator[object]:
    """The values of a block's lines that parse as JSON (the others are skipped)."""
    for line in block.split(b"\n"):
        if line.strip(b" \t\r"):
            with contextlib.suppress(UnicodeDecodeError, ValueError, RecursionError):
                yield json.loads(line.decode("utf-8"))


_SCALARS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def _infer(values: list) -> pa.DataType:
    """What pyarrow infers for JSON values; scalars of one kind are told without it (pa.array imports pandas)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.null()
    if len(kinds) == 1 and (kind := next(iter(kinds))) in _SCALARS and (
            kind is not int or all(-2**63 <= v < 2**63 for v in values if v is not None)):
        return _SCALARS[kind]
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


def record_lines(block: bytes, first_line: int) -> np.ndarray:
    """Line numbers of the non-blank lines of a block (blank: only spaces, tabs, CR), vectorised."""
    a = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    content = np.concatenate([[0], np.cumsum((a != 32) & (a != 9) & (a != 13) & (a != 10))])
    return first_line + np.flatnonzero(content[ends] > content[starts]).astype(np.int64)


# ----- CSV


def parse_csv(block: bytes, first_row: int, names: Sequence[str], f: InputFile,
              opts: ReadOptions) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Whole CSV records (after the header) whose first non-empty one is data row `first_row`. Values are read as
    text: CSV has no types, so kept columns are strings too. A block pyarrow cannot split (an unbalanced quote
    runs to the end of the file) is one bad record."""
    columns = [c for c in dict.fromkeys((opts.id_field, opts.text_field, *opts.keep)) if c in names]
    invalid: list[tuple[int, str, str]] = []

    def skip(bad_row: pacsv.InvalidRow) -> str:
        invalid.append((bad_row.number, f"expected {bad_row.expected_columns} fields, found "
                                        f"{bad_row.actual_columns}", bad_row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(block),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=len(block) + 1, column_names=list(names)),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(include_columns=columns,
                                                 column_types=dict.fromkeys(columns, pa.binary())))
    except pa.ArrowInvalid as err:
        return empty_rows(opts.keep), NO_POSITIONS, [fault_record(f, first_row, err)]
    numbers = np.arange(1, table.num_rows + len(invalid) + 1)
    positions = first_row - 1 + numbers[~np.isin(numbers, [n for n, _, _ in invalid])]
    rows, positions, quarantine = screen_columns(table, positions, columns, f, opts, empty_id=True)
    quarantine += [file_record(f, first_row - 1 + n, reason, text) for n, reason, text in invalid]
    quarantine.sort(key=lambda q: q["position"])
    return rows, positions, quarantine


def csv_record_ends(data: bytes, quotes_before: int) -> np.ndarray:
    """Offsets just past each newline of `data` that ends a CSV record: one outside quotes, i.e. after an
    even number of quote characters (pyarrow's default dialect: "" escapes a quote)."""
    a = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(a == 10)
    even = (np.searchsorted(np.flatnonzero(a == 34), newlines) + quotes_before) % 2 == 0
    return newlines[even] + 1
