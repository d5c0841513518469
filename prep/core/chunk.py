"""The unit of work that flows from Source to Writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Origins:
    """Where each row of a chunk came from: its file and its position there, so that a document quarantined
    after the Source (a poison document, by the engine) is named by file and line or row, like any other."""

    unit: str  # "line" (JSON Lines) | "row" (CSV data row, 1-based; Parquet, datasets row index; .txt: 0)
    positions: np.ndarray  # int64, one per row
    files: tuple[str, ...]  # the one file of every row, or one per row (packed .txt files)

    def of(self, row: int) -> tuple[str, str, int]:
        """(file, unit, position) of row `row` of the chunk."""
        file = self.files[row] if len(self.files) > 1 else self.files[0]
        return file, self.unit, int(self.positions[row])


@dataclass(frozen=True)
class RawSpec:
    """What a worker needs to read a raw chunk, which the coordinator cut without parsing or decoding it:
    whole records of one file (JSON Lines, CSV: the chunk's batch holds their bytes), a row range of a Parquet
    file or of a dataset's Arrow file (`path`, rows [offset, offset + units)), or a run of .txt files (the batch
    lists them). `units` are what tasks split and a poison record is isolated by: records, rows or files."""

    format: str  # "jsonl" | "csv" | "parquet" | "hf_dataset" | "txt"
    source: str  # the file (dataset; first .txt file), as displayed
    first: int  # position of the first unit (1-based line or CSV row; 0-based Parquet or dataset row)
    units: int
    schema: pa.Schema | None  # JSON Lines: the file's column types; CSV: its header; rows: the columns to read
    path: str = ""  # Parquet, dataset: the file to read rows of
    offset: int = 0  # Parquet, dataset: the row of `path` that is the first unit
    filesystem: Any = None  # a remote input's pyarrow filesystem (Ray), read in place; None: local


@dataclass
class Chunk:
    """A batch of documents with a gapless, deterministic sequence number.

    `batch` has the columns `id` (string) and `text` (string), then any kept columns; for a raw chunk (read by
    a worker) it holds what the worker reads instead: the records' bytes (JSON Lines, CSV), the proof of a row
    range that --resume checks (Parquet, datasets), the files' names and sizes (.txt). Then `text_bytes` is
    the size the Source knows without reading (bytes of the records; of the text column from the Parquet
    metadata or the Arrow offsets; of the files) and `documents_in` counts only the records the Source set aside
    (over-long lines, read errors). `quarantine`
    holds the bad records met while building this chunk, as dicts {"source", "position", "reason", "raw",
    "file", "line" or "row"}; they are written by the writer in `seq` order so that `_quarantine.jsonl` is
    deterministic too.
    """

    seq: int
    batch: pa.RecordBatch
    source: str  # the file (or dataset) the chunk came from, relative as given
    text_bytes: int  # UTF-8 bytes of the texts in `batch`
    input_bytes: int  # bytes of input consumed to build this chunk (for progress)
    documents_in: int  # records met, good or bad: len(batch) + len(quarantine)
    quarantine: list[dict] = field(default_factory=list)
    origins: Origins | None = None  # each row's file and position (None: rebuilt only to sample texts)
    raw: RawSpec | None = None  # set: a raw chunk, read by a worker (see RawSpec)

    @property
    def units(self) -> int:
        """What tasks are cut in: rows of a parsed chunk, records, rows or files of a raw one."""
        return self.raw.units if self.raw is not None else self.batch.num_rows


SAMPLE_TEXT_BYTES = 256 * 1024  # of the first chunk, for the fast-path verification


def sample_texts(chunk: Chunk) -> list[str]:
    """The first texts of a chunk, about SAMPLE_TEXT_BYTES of them: what a backend is verified on."""
    texts, total = [], 0
    for text in chunk.batch.column("text").to_pylist():
        texts.append(text)
        total += len(text)
        if total >= SAMPLE_TEXT_BYTES:
            break
    return texts
