"""Arrow <-> numpy without pyarrow's conversions: `to_numpy`, `pa.array`, `pa.scalar` and `fill_null` with a
Python value import pandas on first use (~0.4 s and ~40 MB a process), which a worker need not pay. These read
and build the buffers directly, for the flat numeric, boolean and string arrays the stage and the features use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def numpy_of(values: pa.Array | pa.ChunkedArray, fill: float | None = None) -> np.ndarray:
    """A numeric or boolean array as numpy (a view of Arrow's buffer where the layout allows); nulls become
    `fill`, which must be given when there are any."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    n, offset = len(values), values.offset
    if pa.types.is_boolean(values.type):
        out = _bits(values.buffers()[1], offset, n) if n else np.zeros(0, bool)
    else:
        dtype = numpy_dtype(values.type)
        out = np.frombuffer(values.buffers()[1], dtype, n, offset * dtype.itemsize) if n else np.zeros(0, dtype)
    if values.null_count:
        if fill is None:
            raise ValueError("numpy_of: the array has nulls and no fill value was given")
        out = out.copy()
        out[~_bits(values.buffers()[0], offset, n)] = fill
    return out


def numpy_dtype(type_: pa.DataType) -> np.dtype:
    """The numpy dtype of a fixed-width integer or float type (pyarrow 25's `to_pandas_dtype` imports pandas)."""
    for is_kind, kind in ((pa.types.is_floating, "f"), (pa.types.is_signed_integer, "i"),
                          (pa.types.is_unsigned_integer, "u")):
        if is_kind(type_):
            return np.dtype(f"{kind}{type_.bit_width // 8}")
    raise TypeError(f"not a numeric Arrow type: {type_}")


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + n, bitorder="little")[offset:].astype(bool)


def utf8_of(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the bytes behind a string or binary array, read in place; int64 offsets of its texts into them, one more
    than the texts). Read-only whatever Arrow gave, so that compiled code sees one array type (a writable and a
    read-only batch would each need a compile). Nulls keep whatever offsets Arrow gave them."""
    large = pa.types.is_large_string(strings.type) or pa.types.is_large_binary(strings.type)
    width = np.dtype(np.int64 if large else np.int32)
    _, offsets_buf, data_buf = strings.buffers()
    n = len(strings)
    offsets = (np.frombuffer(offsets_buf, width, n + 1, strings.offset * width.itemsize).astype(np.int64) if n
               else np.zeros(1, np.int64))
    data = np.frombuffer(data_buf if data_buf is not None else b"", np.uint8)
    data.setflags(write=False)
    return data, offsets


def arrow_of(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A flat numeric or boolean numpy array as an Arrow array of `type_`, without nulls."""
    if pa.types.is_boolean(type_):
        data = np.packbits(np.asarray(values, bool), bitorder="little")
    else:
        data = np.ascontiguousarray(values, numpy_dtype(type_))
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(data)])


def string_scalar(text: str, type_: pa.DataType) -> pa.Scalar:
    """A string (or binary) scalar of `type_`, e.g. to fill nulls with."""
    return binary_array([text.encode()], type_)[0]


def binary_array(values: Sequence[bytes], type_: pa.DataType) -> pa.Array:
    """A string or binary array built from its buffers (pa.array imports pandas on first use)."""
    large = pa.types.is_large_string(type_) or pa.types.is_large_binary(type_)
    offsets = np.zeros(len(values) + 1, np.int64 if large else np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])
