"""What a failed task becomes: tried again, split in halves, or its one document quarantined.

Both engines follow this policy, so a poison document is isolated the same way on one
machine and on a cluster, and the rest of its chunk is written normally. A single document
gets three tries so that workers killed from outside (OOM killer, an operator) do not cost
a document; the halves of a failed chunk get one, since the chunk already failed twice: a
poison document among n is found in about log2(n) + 5 failures, not 2 log2(n) + 2.
"""

from __future__ import annotations

from prep.core.chunk import Origins
from prep.errors import UserError
from prep.io.sources import bad_record

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
