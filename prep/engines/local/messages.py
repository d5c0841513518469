"""The typed messages that cross the local engine's pipes: small, picklable, never text or batches.

A process that receives a message of a kind it does not expect raises: a protocol slip is a bug to see,
not something to drop in silence.
"""

from __future__ import annotations

from dataclasses import dataclass

from prep.engines.local.transport import Location


@dataclass(frozen=True, slots=True)
class Task:
    """Coordinator -> worker: compute rows [start, stop) of chunk `seq`, whose input lies at `source`;
    write the output to `out_slot`."""

    task_id: int
    seq: int
    start: int
    stop: int
    source: Location
    out_slot: int


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker -> coordinator: started, tokenizer loaded, warm."""

    worker: int


@dataclass(frozen=True, slots=True)
class Result:
    """Worker -> coordinator: a task's output is at `location`."""

    task_id: int
    location: Location
    stats: dict
    timing: dict


@dataclass(frozen=True, slots=True)
class Failed:
    """Worker -> coordinator: the stage raised on a task (`error`: the exception's last line)."""

    task_id: int
    error: str


WorkerMessage = Ready | Result | Failed
