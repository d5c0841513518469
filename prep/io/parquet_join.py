"""Parquet row groups encoded apart, in parallel, joined into one file.

pyarrow writes a file's row groups one after another on one thread, and encoding token ids
costs ~9 CPU ms per MiB of text (levels, pages, zstd): one thread caps a shard at ~100 MB/s of
text, a fifth of what 16 workers tokenize. So each row group is encoded on its own, by any
thread, as a complete one-row-group file in memory; the shard file is those files' data
(their pages, which hold no absolute offsets) laid end to end, and one footer that lists their
row groups with their offsets moved to where their data now lies. The result is, byte for
byte, the file a single `ParquetWriter` writes from the same tables (tests/test_parquet_join.py).

The footer is Thrift's compact protocol; it is read into fields and written back unchanged but
for the offsets, the row groups' ordinals and the row count.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# Thrift compact protocol types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# Field ids (parquet.thrift) of what moves with a row group's data
_FILE_NUM_ROWS, _FILE_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_META_OFFSETS = (9, 10, 11, 14)  # data_page_offset, index_page_offset, dictionary_page_offset, bloom_filter_offset

Fields = list  # [(field id, type, value)]: a struct, in the order it was written


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, ttype: int):
        if ttype in (_I16, _I32, _I64):
            return self.zigzag()
        if ttype == _STRUCT:
            return self.struct()
        if ttype == _BINARY:
            n = self.varint()
            self.pos += n
            return self.data[self.pos - n:self.pos]
        if ttype in (_LIST, _SET):
            header = self.byte()
            size, elem = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            return elem, [self.value(elem) for _ in range(size)]
        if ttype == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            kt, vt = types >> 4, types & 0x0F
            return kt, vt, [(self.value(kt), self.value(vt)) for _ in range(size)]
        if ttype == _DOUBLE:
            self.pos += 8
            return self.data[self.pos - 8:self.pos]
        if ttype in (_BYTE, _TRUE, _FALSE):  # a bool inside a list is one byte, like a BYTE
            return self.byte()
        raise ValueError(f"Parquet footer: unknown Thrift type {ttype}")

    def struct(self) -> Fields:
        fields, last = [], 0
        while True:
            header = self.byte()
            if header == _STOP:
                return fields
            ttype, delta = header & 0x0F, header >> 4
            fid = last + delta if delta else self.zigzag()
            value = None if ttype in (_TRUE, _FALSE) else self.value(ttype)  # a bool field: its type is its value
            fields.append((fid, ttype, value))
            last = fid


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _write_value(ttype: int, value, out: bytearray) -> None:
    if ttype in (_I16, _I32, _I64):
        _zigzag(value, out)
    elif ttype == _STRUCT:
        _write_struct(value, out)
    elif ttype == _BINARY:
        _varint(len(value), out)
        out += value
    elif ttype in (_LIST, _SET):
        elem, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | elem)
        else:
            out.append(0xF0 | elem)
            _varint(len(items), out)
        for item in items:
            _write_value(elem, item, out)
    elif ttype == _MAP:
        kt, vt, items = value
        _varint(len(items), out)
        if items:
            out.append(kt << 4 | vt)
        for k, v in items:
            _write_value(kt, k, out)
            _write_value(vt, v, out)
    elif ttype == _DOUBLE:
        out += value
    else:  # BYTE, or a bool inside a list
        out.append(value)


def _write_struct(fields: Fields, out: bytearray) -> None:
    last = 0
    for fid, ttype, value in fields:
        if 0 < fid - last <= 15:
            out.append((fid - last) << 4 | ttype)
        else:
            out.append(ttype)
            _zigzag(fid, out)
        if value is not None:
            _write_value(ttype, value, out)
        last = fid
    out.append(_STOP)


def read_footer(data: bytes) -> Fields:
    return _Reader(data).struct()


def write_footer(fields: Fields) -> bytes:
    out = bytearray()
    _write_struct(fields, out)
    return bytes(out)


def _get(fields: Fields, fid: int):
    return next((value for f, _t, value in fields if f == fid), None)


def _replace(fields: Fields, changes: dict) -> Fields:
    return [(fid, ttype, changes[fid](value) if fid in changes else value) for fid, ttype, value in fields]


def _moved(shift: int) -> Callable[[int], int]:
    """An offset `shift` bytes later; 0 is "not set" (pyarrow writes the deprecated ColumnChunk.file_offset so)."""
    return lambda offset: offset + shift if offset else 0


def _moved_row_group(row_group: Fields, shift: int, ordinal: int) -> Fields:
    """The row group's metadata once its data starts `shift` bytes later in the file."""
    move = _moved(shift)
    meta_changes = dict.fromkeys(_META_OFFSETS, move)

    def column(chunk: Fields) -> Fields:
        return _replace(chunk, {_CC_FILE_OFFSET: move, _CC_OFFSET_INDEX: move, _CC_COLUMN_INDEX: move,
                                _CC_META: lambda meta: _replace(meta, meta_changes)})

    return _replace(row_group, {_RG_COLUMNS: lambda cols: (cols[0], [column(c) for c in cols[1]]),
                                _RG_FILE_OFFSET: move, _RG_ORDINAL: lambda _old: ordinal})


def encode_row_group(table: pa.Table, compression: str, use_dictionary: list[str] | bool) -> pa.Buffer:
    """The table as a file of one row group, in memory (run in any thread: pyarrow releases the GIL)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression=compression, write_statistics=True,
                          use_dictionary=use_dictionary) as writer:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


def _split(blob: pa.Buffer | bytes) -> tuple[memoryview, Fields]:
    """(the data between the magic and the footer, the footer's fields) of a one-row-group file, read in place."""
    view = memoryview(blob)
    if view[:4] != MAGIC or view[-4:] != MAGIC:
        raise ValueError("not a Parquet file")
    (length,) = struct.unpack("<I", view[-8:-4])
    start = len(view) - 8 - length
    return view[4:start], read_footer(view[start:-8].tobytes())


class JoinedParquetFile:
    """One Parquet file from row groups encoded in parallel: `add` hands a table to the executor and writes
    the encoded row groups that are ready, in order; `close` writes the rest and the footer."""

    def __init__(self, sink: BinaryIO, schema: pa.Schema, executor: Executor, compression: str,
                 use_dictionary: list[str] | bool, max_pending: int) -> None:
        self.sink, self.schema, self.executor = sink, schema, executor
        self.compression, self.use_dictionary = compression, use_dictionary
        self.max_pending = max(1, max_pending)
        self.pending: deque[Future] = deque()
        self.footer: Fields | None = None
        self.row_groups: list[Fields] = []
        self.num_rows = 0
        self.sink.write(MAGIC)
        self.position = len(MAGIC)

    def add(self, table: pa.Table) -> None:
        """One row group: the table, cast to the file's schema where it differs (every row group has the file's)."""
        if table.schema != self.schema:
            table = table.cast(self.schema)
        self.pending.append(self.executor.submit(encode_row_group, table, self.compression, self.use_dictionary))
        while self.pending and (self.pending[0].done() or len(self.pending) > self.max_pending):
            self._append(self.pending.popleft().result())

    def _append(self, blob: pa.Buffer) -> None:
        data, footer = _split(blob)
        self.footer = self.footer or footer
        (row_group,) = _get(footer, _FILE_ROW_GROUPS)[1]
        self.row_groups.append(_moved_row_group(row_group, self.position - len(MAGIC), len(self.row_groups)))
        self.num_rows += _get(footer, _FILE_NUM_ROWS)
        self.sink.write(data)
        self.position += len(data)

    def close(self) -> None:
        """The remaining row groups, the footer, its length and the magic (the sink stays open)."""
        while self.pending:
            self._append(self.pending.popleft().result())
        if self.footer is None:
            raise ValueError("a Parquet file needs at least one row group")
        footer = write_footer(_replace(self.footer, {
            _FILE_NUM_ROWS: lambda _n: self.num_rows,
            _FILE_ROW_GROUPS: lambda groups: (groups[0], self.row_groups),
        }))
        self.sink.write(footer + struct.pack("<I", len(footer)) + MAGIC)
