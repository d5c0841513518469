"""A shard's output files: Parquet, Megatron's indexed dataset, llm.c token shards, packed sequences.

The writer (`prep/io/writer.py`) decides the order of the rows and where a shard ends; `ShardFiles` turns one
shard's rows, in that order, into every format the pipeline asks for, in one pass, each under a temp name
until `commit` fsyncs and renames them all. Both engines use it through `ShardWriter`, so their files are
the same bytes.

Packing (`[pack] seq_len`) happens here too, per shard: a shard's packed rows depend on that shard's
documents only, so shards can still be written in parallel (the Ray engine) and resumed one by one. With
packing, every format holds the packed rows: Parquet the rows with their document boundaries, Megatron one
sequence per row, llm.c the rows one after another.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import struct
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.errors import UserError
from prep.io.parquet_join import JoinedParquetFile

FORMATS = ("parquet", "megatron", "llmc")
PACK_METHODS = ("concat", "bfd")
LLMC_DTYPES = ("auto", "uint16", "uint32")
SHARD_FILE_PATTERNS = ("part-*.parquet", "part-*.bin", "part-*.idx")  # every file of every shard

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {"uint16": (8, np.uint16), "int32": (4, np.int32)}  # Megatron's DType codes
MEGATRON_UINT16_BELOW = 65500  # Megatron's optimal_dtype: uint16 for a vocabulary smaller than this
LLMC_HEADER = {"uint16": (20240520, 1, np.uint16), "uint32": (20240801, 7, np.uint32)}  # llm.c's data_common.py
LLMC_HEADER_INTS = 256
ROW_GROUP_BYTES = 16 * 2**20  # packed rows per Parquet row group: about this much in memory


def file_names(fmt: str, index: int) -> tuple[str, ...]:
    """The files of format `fmt` for shard `index` ("train" lets datasets take Parquet shards as the train split)."""
    stem = f"part-{index:05d}-train"
    return {"parquet": (f"{stem}.parquet",), "megatron": (f"{stem}_text_document.bin", f"{stem}_text_document.idx"),
            "llmc": (f"{stem}.llmc.bin",)}[fmt]


def shard_file_index(name: str) -> int | None:
    """The shard a file name belongs to, or None for a file that is no shard's."""
    found = re.fullmatch(r"part-(\d+)-.*\.(parquet|bin|idx)", name)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class OutputSpec:
    """Everything the writer needs to know about the formats: resolved and checked before any process starts."""

    formats: tuple[str, ...] = ("parquet",)
    megatron_dtype: str = "uint16"
    llmc_dtype: str = "uint16"
    eos: int | None = None  # llm.c's end-of-text before each document; packing's separator and padding
    seq_len: int | None = None  # packing, when set
    method: str = "concat"
    window_docs: int = 10_000
    add_eos: bool = False  # packing: the stage did not append EOS, the packer does


def output_spec(config: Any) -> OutputSpec:
    """Check the pipeline's output settings (user errors, one line each) and resolve the dtypes from the
    tokenizer's ids."""
    vocab_size = tokenizer_id_space(config.tokenizer)
    formats = list(config.formats)
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise UserError(f"unknown output format {unknown[0]!r}; choose from: {', '.join(FORMATS)}" if unknown
                        else f"no output format; choose from: {', '.join(FORMATS)}")
    if len(set(formats)) < len(formats):
        raise UserError(f"output format given twice: {', '.join(formats)}")
    if config.llmc_dtype not in LLMC_DTYPES:
        raise UserError(f"unknown llmc_dtype {config.llmc_dtype!r}; choose from: {', '.join(LLMC_DTYPES)}")
    llmc = config.llmc_dtype
    if llmc == "auto":
        llmc = "uint16" if vocab_size <= 2**16 else "uint32"
    elif llmc == "uint16" and vocab_size > 2**16:
        raise UserError(f"llmc uint16 tokens cannot hold this tokenizer's {vocab_size:,} ids (at most 65,536); "
                        "use llmc_dtype = \"uint32\" or \"auto\"")
    seq_len = config.pack_seq_len
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0):
        raise UserError(f"pack seq_len must be a positive number of tokens, not {seq_len!r}")
    if config.pack_method not in PACK_METHODS:
        raise UserError(f"unknown pack method {config.pack_method!r}; choose from: {', '.join(PACK_METHODS)}")
    window = config.pack_window_docs
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise UserError(f"pack window_docs must be a positive number of documents, not {window!r}")
    eos = None
    if "llmc" in formats or seq_len is not None:
        from prep.text.tokenizer import eos_id

        try:
            eos = eos_id(config.tokenizer, config.eos_token)
        except UserError as exc:
            what = "packing" if seq_len is not None else "llmc"
            raise UserError(f"{what} needs an end-of-text token: {str(exc).split(': ', 1)[-1]}") from None
    return OutputSpec(
        formats=tuple(formats), megatron_dtype="uint16" if vocab_size < MEGATRON_UINT16_BELOW else "int32",
        llmc_dtype=llmc, eos=eos, seq_len=seq_len, method=config.pack_method, window_docs=window,
        add_eos=seq_len is not None and not config.append_eos,
    )


def tokenizer_id_space(path: str) -> int:
    """One more than the largest id of the tokenizer (added tokens included): what a dtype must hold."""
    from prep.text.tokenizer import vocabulary

    return max(vocabulary(path).values(), default=-1) + 1


# ---------------------------------------------------------------------------------------------- tokens


def flat_ids(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(ids as uint32, offsets as int64 from 0) of a list<uint32> column, without a Python object per id."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]] if len(array) else \
        np.zeros(0, np.uint32)
    return values, offsets - offsets[0]


class _MegatronSink:
    """`.bin`: ids, no header; `.idx`: written at commit from the lengths (Megatron's `_IndexWriter` layout)."""

    def __init__(self, out: Path, index: int, dtype: str) -> None:
        self.code, self.dtype = MEGATRON_DTYPES[dtype]
        self.names = file_names("megatron", index)
        self.tmps = [out / f".{n}.tmp" for n in self.names]
        self.bin = open(self.tmps[0], "wb")  # noqa: SIM115 - open for the shard's life, closed at commit
        self.lengths: list[np.ndarray] = []

    def write(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.bin.write(ids.astype(self.dtype).data)
        self.lengths.append(np.diff(offsets).astype(np.int32))

    def close(self) -> list[tuple[str, Path, Path]]:
        self.bin.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        n = len(lengths)
        pointers = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        with open(self.tmps[1], "wb") as f:
            f.write(MEGATRON_MAGIC + struct.pack("<Q", 1) + struct.pack("<B", self.code))
            f.write(struct.pack("<Q", n) + struct.pack("<Q", n + 1))
            for part, dtype in ((lengths, "<i4"), (pointers, "<i8"), (np.arange(n + 1), "<i8")):
                f.write(part.astype(dtype).data)
        return [("megatron", tmp, tmp.with_name(name)) for tmp, name in zip(self.tmps, self.names, strict=True)]


class _LlmcSink:
    """256 int32 of header (its token count filled in at commit), then the tokens; EOT before each document
    (not for packed rows, which carry their own separators)."""

    def __init__(self, out: Path, index: int, dtype: str, eot: int | None) -> None:
        self.magic, self.version, self.dtype = LLMC_HEADER[dtype]
        self.name = file_names("llmc", index)[0]
        self.tmp = out / f".{self.name}.tmp"
        self.eot = eot
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - open for the shard's life, closed at commit
        self.f.write(bytes(4 * LLMC_HEADER_INTS))
        self.tokens = 0

    def write(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        if self.eot is not None:
            ids = np.insert(ids, offsets[:-1], np.uint32(self.eot))
        self.f.write(ids.astype(self.dtype).data)
        self.tokens += len(ids)

    def close(self) -> list[tuple[str, Path, Path]]:
        if self.tokens >= 2**31:
            raise RuntimeError(f"{self.name}: {self.tokens:,} tokens do not fit llm.c's int32 count; "
                               "use a smaller --shard-bytes")
        header = np.zeros(LLMC_HEADER_INTS, "<i4")
        header[:3] = (self.magic, self.version, self.tokens)
        self.f.seek(0)
        self.f.write(header.data)
        self.f.close()
        return [("llmc", self.tmp, self.tmp.with_name(self.name))]


# -------------------------------------------------------------------------------------------- packing


def packed_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([("input_ids", pa.list_(pa.uint32())), ("position_ids", pa.list_(pa.int32())),
                      ("doc_lengths", pa.list_(pa.int32())), ("doc_ids", pa.list_(id_type)),
                      ("num_padding", pa.int32())])


def build_rows(tokens: np.ndarray, seg_row: np.ndarray, seg_src: np.ndarray, seg_len: np.ndarray,
               seg_ids: pa.Array, n_rows: int, seq_len: int, pad: int) -> pa.Table:
    """Packed rows from segments (pieces of documents) given in row order, each row's from column 0.

    Padding fills each row's end; its positions count 0, 1, … as one segment of its own, so that attention
    by position never joins it to the row's last document."""
    used = np.bincount(seg_row, weights=seg_len, minlength=n_rows).astype(np.int64)
    row_base = np.zeros(n_rows, np.int64)
    np.cumsum(used[:-1], out=row_base[1:])
    seg_first = np.zeros(len(seg_len), np.int64)
    np.cumsum(seg_len[:-1], out=seg_first[1:])
    total = int(used.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(seg_first, seg_len)  # offset inside its segment
    dest = np.repeat(seg_row * seq_len + (seg_first - row_base[seg_row]), seg_len) + within
    ids = np.full(n_rows * seq_len, pad, np.uint32)
    ids[dest] = tokens[np.repeat(seg_src, seg_len) + within]
    positions = (np.tile(np.arange(seq_len, dtype=np.int64), n_rows) - np.repeat(used, seq_len)).astype(np.int32)
    positions[dest] = within
    row_offsets = pa.array(np.arange(n_rows + 1, dtype=np.int64) * seq_len, pa.int64())
    seg_offsets = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(seg_row, minlength=n_rows), out=seg_offsets[1:])
    seg_offsets = pa.array(seg_offsets, pa.int32())
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(row_offsets.cast(pa.int32()), pa.array(ids, pa.uint32())),
        "position_ids": pa.ListArray.from_arrays(row_offsets.cast(pa.int32()), pa.array(positions, pa.int32())),
        "doc_lengths": pa.ListArray.from_arrays(seg_offsets, pa.array(seg_len.astype(np.int32), pa.int32())),
        "doc_ids": pa.ListArray.from_arrays(seg_offsets, seg_ids),
        "num_padding": pa.array((seq_len - used).astype(np.int32), pa.int32()),
    })


class _Docs:
    """Documents waiting to be packed: their tokens (EOS included) end to end, start offsets and ids."""

    def __init__(self, id_type: pa.DataType) -> None:
        self.tokens = np.zeros(0, np.uint32)
        self.starts = np.zeros(0, np.int64)
        self.ids: pa.Array = pa.array([], id_type)

    def add(self, tokens: np.ndarray, offsets: np.ndarray, ids: pa.Array) -> None:
        self.starts = np.concatenate([self.starts, offsets[:-1] + len(self.tokens)])
        self.tokens = np.concatenate([self.tokens, tokens])
        self.ids = pa.concat_arrays([self.ids, ids])

    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self.tokens))

    def take_first(self, n: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """Remove the first n documents; return (tokens, starts, ids) of them."""
        cut = int(self.starts[n]) if n < len(self.starts) else len(self.tokens)
        taken = self.tokens[:cut], self.starts[:n], self.ids.slice(0, n)
        self.tokens, self.starts, self.ids = self.tokens[cut:], self.starts[n:] - cut, self.ids.slice(n)
        return taken


class Packer:
    """Rows of exactly `seq_len` tokens from one shard's documents, in order: `concat` or `bfd`.

    Memory: `concat` holds less than one row of tokens; `bfd` holds its window of documents."""

    def __init__(self, spec: OutputSpec, id_type: pa.DataType) -> None:
        self.spec, self.seq_len = spec, spec.seq_len
        self.docs = _Docs(id_type)
        self.position = 0  # concat: tokens of the shard's stream before self.docs
        self.stats = {"seq_len": spec.seq_len, "method": spec.method, "sequences": 0, "documents": 0,
                      "tokens": 0, "padding": 0, "documents_cut": 0, "pieces": 0}

    def add(self, table: pa.Table) -> list[pa.Table]:
        ids, offsets = flat_ids(table.column("input_ids"))
        if self.spec.add_eos:
            ids = np.insert(ids, offsets[1:], np.uint32(self.spec.eos))
            offsets = offsets + np.arange(len(offsets), dtype=np.int64)
        self.stats["documents"] += table.num_rows
        self.stats["tokens"] += len(ids)
        if self.spec.method == "concat":
            starts = offsets[:-1] + self.position + len(self.docs.tokens)
            ends = offsets[1:] + self.position + len(self.docs.tokens)
            self.stats["documents_cut"] += int(np.count_nonzero(starts // self.seq_len != (ends - 1) // self.seq_len))
        self.docs.add(ids, offsets, table.column("id").combine_chunks())
        if self.spec.method == "concat":
            return self._concat(final=False)
        rows = []
        while len(self.docs.starts) >= self.spec.window_docs:
            rows.append(self._bfd(*self.docs.take_first(self.spec.window_docs)))
        return rows

    def finish(self) -> list[pa.Table]:
        """The shard's last rows: concat's partial row (padded), bfd's last window."""
        if not len(self.docs.starts):
            return []
        if self.spec.method == "concat":
            return self._concat(final=True)
        return [self._bfd(*self.docs.take_first(len(self.docs.starts)))]

    def _count(self, table: pa.Table) -> pa.Table:
        self.stats["sequences"] += table.num_rows
        self.stats["padding"] += int(pc.sum(table.column("num_padding")).as_py() or 0)
        self.stats["pieces"] += int(pc.sum(pc.list_value_length(table.column("doc_ids"))).as_py()
                                    or 0)
        return table

    def _concat(self, final: bool) -> list[pa.Table]:
        """doc₁ EOS doc₂ EOS … cut every seq_len tokens; what is left waits for more (or, final, is padded)."""
        docs, size = self.docs, self.seq_len
        n_rows = len(docs.tokens) // size + (1 if final and len(docs.tokens) % size else 0)
        if n_rows == 0:
            return []
        limit = min(n_rows * size, len(docs.tokens))
        cuts = np.union1d(np.concatenate([docs.starts, docs.ends()]), np.arange(0, limit, size))
        seg_src = cuts[cuts < limit]
        seg_len = np.diff(np.append(seg_src, limit))
        seg_doc = np.searchsorted(docs.starts, seg_src, side="right") - 1
        table = build_rows(docs.tokens, seg_src // size, seg_src, seg_len, docs.ids.take(pa.array(seg_doc)),
                           n_rows, size, self.spec.eos)
        # what is left: the document cut at `limit` (if any) continues as the first of the waiting ones
        first = int(np.searchsorted(docs.starts, limit, side="right") - 1) if limit < len(docs.tokens) else \
            len(docs.starts)
        if first < len(docs.starts):
            docs.starts[first] = limit
        docs.take_first(first)
        self.position += limit
        return [self._count(table)]

    def _bfd(self, tokens: np.ndarray, starts: np.ndarray, ids: pa.Array) -> pa.Table:
        """Best-fit decreasing over one window (Ding et al., 2024): longest first, each into the fullest bin
        it fits, a new bin when none; a document longer than seq_len is cut into seq_len pieces first."""
        size = self.seq_len
        lengths = np.append(starts[1:], len(tokens)) - starts
        pieces = (lengths + size - 1) // size
        self.stats["documents_cut"] += int(np.count_nonzero(pieces > 1))
        item_doc = np.repeat(np.arange(len(starts)), pieces)
        first_item = np.repeat(np.cumsum(pieces) - pieces, pieces)
        item_src = starts[item_doc] + (np.arange(len(item_doc)) - first_item) * size
        item_len = np.minimum(size, starts[item_doc] + lengths[item_doc] - item_src)
        order = np.argsort(-item_len, kind="stable")
        item_bin = np.empty(len(order), np.int64)
        free: list[int] = []  # (room << 32) | bin, sorted: the first at or above (need << 32) is the best fit
        bins = 0
        for i, need in zip(order.tolist(), item_len[order].tolist(), strict=True):
            at = bisect.bisect_left(free, need << 32)
            if at == len(free):
                b, room = bins, size - need
                bins += 1
            else:
                key = free.pop(at)
                b, room = key & 0xFFFFFFFF, (key >> 32) - need
            item_bin[i] = b
            if room:
                bisect.insort(free, (room << 32) | b)
        placed = order[np.argsort(item_bin[order], kind="stable")]  # by bin, then in the order placed
        table = build_rows(tokens, item_bin[placed], item_src[placed], item_len[placed],
                           ids.take(pa.array(item_doc[placed])), bins, size, self.spec.eos)
        return self._count(table)


def packing_summary(stats: list[dict]) -> dict:
    """The manifest's packing section: how well the rows are filled."""
    total = {k: sum(s[k] for s in stats) for k in ("sequences", "documents", "tokens", "padding", "documents_cut",
                                                   "pieces")}
    slots = total["sequences"] * stats[0]["seq_len"]
    return {"seq_len": stats[0]["seq_len"], "method": stats[0]["method"], **total,
            "padding_fraction": round(total["padding"] / slots, 6) if slots else 0.0,
            "docs_per_sequence": round(total["pieces"] / total["sequences"], 4) if total["sequences"] else 0.0}


# ---------------------------------------------------------------------------------------------- shard


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns written with a Parquet dictionary: strings and binaries kept from the input (labels, sources,
    languages: few distinct values), not `id` or `text` (one value per document, so Parquet would build the
    dictionary, then give it up). Numbers never: zstd packs them tighter without one, and faster (the features of
    19,221 documents of the bench slice: 0.81-0.98 of the bytes each, writing 0.5-0.9 CPU ms per MiB of text less)."""
    text_like = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return [f.name for f in schema if f.name not in ("id", "text") and any(is_(f.type) for is_ in text_like)]


class ShardFiles:
    """One shard's files while it is written; `seal` finishes them under temp names, `publish` makes them final."""

    def __init__(self, spec: OutputSpec, out: Path, index: int, compression: str, encoders: Executor,
                 encoder_threads: int) -> None:
        self.spec, self.out, self.index, self.compression = spec, out, index, compression
        # threads that encode Parquet row groups in parallel (prep/io/parquet_join.py); one more row group than
        # they take may wait, encoded, for its turn to be written
        self.encoders, self.max_pending = encoders, encoder_threads + 1
        self.parquet: JoinedParquetFile | None = None
        self.parquet_file: BinaryIO | None = None
        self.sinks: list[Any] = []
        if "megatron" in spec.formats:
            self.sinks.append(_MegatronSink(out, index, spec.megatron_dtype))
        if "llmc" in spec.formats:
            self.sinks.append(_LlmcSink(out, index, spec.llmc_dtype, None if spec.seq_len else spec.eos))
        self.packer: Packer | None = None
        self.held: list[pa.Table] = []  # packed rows not yet written: whole row groups go out
        self.group_rows = max(1, ROW_GROUP_BYTES // (9 * spec.seq_len)) if spec.seq_len else 0

    def write(self, table: pa.Table) -> None:
        """Rows in the shard's order (one contiguous piece per column)."""
        if not self.spec.seq_len:
            self._write(table)
            return
        if self.packer is None:
            self.packer = Packer(self.spec, table.schema.field("id").type)
        self._hold(self.packer.add(table), final=False)

    def _hold(self, tables: list[pa.Table], final: bool) -> None:
        """Packed rows go out in row groups of a fixed size: the files do not depend on how the writer's
        input was batched."""
        self.held.extend(t for t in tables if t.num_rows)
        rows = sum(t.num_rows for t in self.held)
        if not rows or (rows < self.group_rows and not final):
            return
        held = pa.concat_tables(self.held).combine_chunks()
        start = 0
        while held.num_rows - start >= self.group_rows or (final and start < held.num_rows):
            self._write(held.slice(start, self.group_rows).combine_chunks())
            start += self.group_rows
        self.held = [held.slice(start)] if start < held.num_rows else []

    def _write(self, table: pa.Table) -> None:
        if "parquet" in self.spec.formats:
            if self.parquet is None:
                self.parquet_file = open(self._tmp("parquet"), "wb")  # noqa: SIM115 - closed by seal
                self.parquet = JoinedParquetFile(self.parquet_file, table.schema, self.encoders, self.compression,
                                                 _dictionary_columns(table.schema), self.max_pending)
            self.parquet.add(table)
        if self.sinks:
            ids, offsets = flat_ids(table.column("input_ids"))
            for sink in self.sinks:
                sink.write(ids, offsets)

    def _tmp(self, fmt: str) -> Path:
        return self.out / f".{file_names(fmt, self.index)[0]}.tmp"

    def seal(self) -> tuple[list[tuple], dict | None]:
        """Finish every file under its temp name, fsync and checksum it (any thread: the writer's main thread goes
        on meanwhile); returns what `publish` renames, and the packing statistics."""
        if self.packer is not None:
            self._hold(self.packer.finish(), final=True)
        moves = []
        if self.parquet is not None:
            self.parquet.close()
            self.parquet_file.close()
            tmp = self._tmp("parquet")
            moves.append(("parquet", tmp, tmp.with_name(file_names("parquet", self.index)[0])))
        for sink in self.sinks:
            moves.extend(sink.close())
        sealed = []
        for fmt, tmp, final in moves:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
                f.seek(0)
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                sealed.append((fmt, tmp, final, digest, f.tell()))
        return sealed, (dict(self.packer.stats) if self.packer is not None else None)

    @staticmethod
    def publish(sealed: list[tuple]) -> list[dict]:
        """Rename the sealed files (the caller fsyncs the directory, then journals them); returns
        [{format, file, bytes, sha256}]."""
        files = []
        for fmt, tmp, final, digest, size in sealed:
            os.replace(tmp, final)
            files.append({"format": fmt, "file": final.name, "bytes": size, "sha256": digest})
        return files


# ---------------------------------------------------------------------------------------------- inspect


def describe_formats(out: Path, manifest: dict) -> str:
    """`prep inspect`: each binary format present, read from its own headers."""
    files: dict[str, list[str]] = {}
    for shard in manifest.get("shards", []):
        for f in shard.get("files", []):
            files.setdefault(f["format"], []).append(f["file"])
    lines = []
    if idx := [name for name in files.get("megatron", []) if name.endswith(".idx")]:
        sequences, codes = 0, set()
        for name in idx:
            with open(out / name, "rb") as f:
                head = f.read(len(MEGATRON_MAGIC) + 17)
            codes.add(head[len(MEGATRON_MAGIC) + 8])
            sequences += struct.unpack_from("<Q", head, len(MEGATRON_MAGIC) + 9)[0]
        dtype = "/".join(n for n, (c, _) in MEGATRON_DTYPES.items() if c in codes)
        lines.append(f"megatron       {len(idx)} .bin/.idx pair(s), {sequences:,} sequences, {dtype} tokens "
                     f"(IndexedDataset path prefix: {out / idx[0][:-4]})")
    if llmc := files.get("llmc"):
        tokens, kinds = 0, set()
        for name in llmc:
            header = np.fromfile(out / name, "<i4", count=3)
            kinds.add(next(n for n, (m, v, _) in LLMC_HEADER.items() if (m, v) == tuple(header[:2])))
            tokens += int(header[2])
        lines.append(f"llmc           {len(llmc)} shard(s), {tokens:,} tokens, {'/'.join(sorted(kinds))} "
                     f"(header of {LLMC_HEADER_INTS} int32, magic {'/'.join(str(LLMC_HEADER[k][0]) for k in kinds)})")
    return "\n".join(lines)


def packing_line(packing: dict) -> str:
    return (f"packing        {packing['method']} into {packing['seq_len']:,} tokens: {packing['sequences']:,} "
            f"sequences, padding {100 * packing['padding_fraction']:.2f} %, {packing['documents_cut']:,} "
            f"documents cut, {packing['docs_per_sequence']:.2f} documents per sequence")
