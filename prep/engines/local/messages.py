"""The typed messages that cross the local engine's pipes: small named tuples (as cheap to pickle as plain
tuples), never text or batches.

A process that receives a message of a kind it does not expect raises: a protocol slip is a bug to see,
not something to drop in silence.
"""

from __future__ import annotations

from typing import NamedTuple

from prep.core.chunk import RawSpec
from prep.engines.local.transport import Location


class Task(NamedTuple):
    """Coordinator -> worker: compute rows [start, stop) of chunk `seq`, whose input lies at `source`;
    write the output to `out_slot`. For a raw chunk (`raw` set) the rows are its units (records, rows, files),
    read first."""

    task_id: int
    seq: int
    start: int
    stop: int
    source: Location
    out_slot: int
    raw: RawSpec | None = None


class Ready(NamedTuple):
    """Worker -> coordinator: started, tokenizer loaded, warm."""

    worker: int


class Result(NamedTuple):
    """Worker -> coordinator: a task's output is at `location`."""

    task_id: int
    location: Location
    stats: dict
    timing: dict


class Failed(NamedTuple):
    """Worker -> coordinator: the stage raised on a task (`error`: the exception's last line)."""

    task_id: int
    error: str


WorkerMessage = Ready | Result | Failed
