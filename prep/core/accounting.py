"""What a run measured per worker, and the routing summary the manifest and the report show."""

from __future__ import annotations

from dataclasses import dataclass

from prep.core.router import Router
from prep.core.theory import expected_imbalance_uniform


@dataclass
class WorkerAccount:
    """Per-worker accounting for the manifest and the run report."""

    worker: int
    chunks: int = 0
    bytes: int = 0
    documents: int = 0
    tokens: int = 0
    busy_s: float = 0.0  # wall time with a task in hand; the parts below are CPU time, so that a loaded machine
    idle_s: float = 0.0  # does not inflate them: busy minus the parts is glue and waiting for a core
    queue_wait_s: float = 0.0
    parse_s: float = 0.0  # raw chunks read and parsed in the worker (every format)
    filter_s: float = 0.0
    tokenize_s: float = 0.0
    features_s: float = 0.0
    transport_s: float = 0.0
    restarts: int = 0


@dataclass
class EngineResult:
    manifest: dict
    accounts: list[WorkerAccount]
    faults: list[str]


def routing_summary(router: Router, accounts: list[WorkerAccount], tasks: int) -> dict:
    """Load balance of the run beside what uniform random routing would give (balls into bins)."""
    loads = [a.bytes for a in accounts]
    mean = sum(loads) / len(loads) if loads else 0.0
    imbalance = max(loads) / mean if mean else 1.0
    cv = (sum((x - mean) ** 2 for x in loads) / len(loads)) ** 0.5 / mean if mean else 0.0
    return {
        "router": router.name,
        "seed": router.seed,
        "decisions": len(router.decisions),
        "tasks": tasks,
        "imbalance": round(imbalance, 4),
        "cv": round(cv, 4),
        "expected_imbalance_uniform": round(expected_imbalance_uniform(tasks, len(accounts)), 4),
        "workers": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(a).items()} for a in accounts
        ],
    }
