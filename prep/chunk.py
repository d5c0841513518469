"""The unit of work that flows from Source to Writer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class Chunk:
    """A batch of documents with a gapless, deterministic sequence number.

    `batch` always has the columns `id` (string) and `text` (string), then any kept
    columns. `quarantine` holds the bad records met while building this chunk, as
    dicts {"source", "position", "reason", "raw"}; they are written by the writer in
    `seq` order so that `_quarantine.jsonl` is deterministic too.
    """

    seq: int
    batch: pa.RecordBatch
    source: str  # the file (or dataset) the chunk came from, relative as given
    text_bytes: int  # UTF-8 bytes of the texts in `batch`
    input_bytes: int  # bytes of input consumed to build this chunk (for progress)
    documents_in: int  # records met, good or bad: len(batch) + len(quarantine)
    quarantine: list[dict] = field(default_factory=list)
