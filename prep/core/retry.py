"""What a failed task becomes: tried again, split in halves, or its one document quarantined.

Both engines follow this policy, so a poison document is isolated the same way on one
machine and on a cluster, and the rest of its chunk is written normally. A single document
gets three tries so that workers killed from outside (OOM killer, an operator) do not cost
a document; the halves of a failed chunk get one, since the chunk already failed twice: a
poison document among n is found in about log2(n) + 5 failures, not 2 log2(n) + 2.
"""

from __future__ import annotations

import json

import pyarrow as pa

from prep.core.chunk import Origins, RawSpec
from prep.errors import UserError
from prep.io.pieces import PIECE_FORMATS, read_raw
from prep.io.records import POSITION_KEY, ReadOptions, bad_record, raw_record

CHUNK_ATTEMPTS = 2  # a whole chunk: one retry, since a worker can die for reasons of its own (OOM, a kill)
PART_ATTEMPTS = 1  # a part of a chunk that already failed: split again at once
DOCUMENT_ATTEMPTS = 3  # a single document: quarantined only after three tries


def attempts_allowed(start: int, stop: int, whole_chunk: bool) -> int:
    """How many tries the task of rows [start, stop) gets before it is split or quarantined."""
    if stop - start == 1:
        return DOCUMENT_ATTEMPTS
    return CHUNK_ATTEMPTS if whole_chunk else PART_ATTEMPTS


def halves(start: int, stop: int) -> list[tuple[int, int, int]]:
    """The two tasks (start, stop, attempts allowed) a failed task of several rows is split into."""
    mid = (start + stop) // 2
    return [(a, b, attempts_allowed(a, b, whole_chunk=False)) for a, b in ((start, mid), (mid, stop))]


def quarantine_record(origins: Origins, index: int, text: str, reason: str) -> dict:
    """The `_quarantine.jsonl` line of row `index` of a chunk, a document that failed every try: named by its
    file and line or row, as the Source names the bad records it finds."""
    file, unit, position = origins.of(index)
    return bad_record(file, unit, position, reason, text)


def strict_fault_error(origins: Origins, index: int, doc_id: str, reason: str) -> UserError:
    """With --strict, a document that failed every try ends the run: said with its id, file and line or row."""
    file, unit, position = origins.of(index)
    return UserError(f"{file}, document {doc_id} ({unit} {position}): {reason} (strict mode)")


def poison_record(batch: pa.RecordBatch, raw: RawSpec | None, origins: Origins | None, index: int, reason: str,
                  opts: ReadOptions) -> dict:
    """The quarantine part of unit `index` of a chunk, which failed every try (with --strict, the error that
    ends the run): a row of a parsed chunk, or a record, row or file of a raw one, named by file and position
    either way (a row or file is read again here, alone, for its id and text). Returned as the part's stats; a
    raw chunk's records are counted by its parts (`in_documents`)."""
    counted_by_parts = raw is not None  # a raw chunk's records are counted by its parts
    if raw is not None and raw.format in PIECE_FORMATS:
        parsed = read_raw(batch, raw, opts, index, index + 1)
        if not parsed.batch.num_rows:  # no longer readable: what reading it found instead
            return {"documents": 0, "filtered": 0, "tokens": 0, "quarantine": parsed.quarantine,
                    "in_documents": parsed.documents_in}
        batch, raw, origins, index = parsed.batch, None, parsed.origins, 0
    if raw is not None:
        position, data = raw_record(batch, raw, index)
        unit = POSITION_KEY[raw.format]
        if opts.strict:
            doc = f"document {doc_id} ({unit} {position})" if (doc_id := _json_id(data, opts.id_field)) else \
                f"{unit} {position}"
            raise UserError(f"{raw.source}, {doc}: {reason} (strict mode)")
        record = bad_record(raw.source, unit, position, reason, data)
    else:
        row = batch.slice(index, 1).to_pylist()[0]
        if opts.strict:
            raise strict_fault_error(origins, index, row["id"], reason)
        record = quarantine_record(origins, index, row["text"], reason)
    return {"documents": 0, "filtered": 0, "tokens": 0, "quarantine": [record], "in_documents": int(counted_by_parts)}


def _json_id(record: bytes, id_field: str) -> str | None:
    """The id of a raw JSON Lines record, to name it in an error (None when it has none, or is not JSON)."""
    try:
        value = json.loads(record)
    except ValueError:
        return None
    return None if not isinstance(value, dict) or value.get(id_field) is None else str(value[id_field])
