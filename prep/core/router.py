"""Routers: pick the worker for each chunk.

Every router is seeded and records each decision (seq -> worker). A router only
decides *where* a chunk is computed; the writer's re-ordering by seq makes the output
independent of that choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUTERS = ("random", "p2c", "weighted", "round-robin")


class Router:
    """Base class: subclasses implement `_pick`; `choose` records the decision."""

    name = "base"

    def __init__(self, workers: int, seed: int = 0) -> None:
        if workers < 1:
            raise ValueError("a router needs at least one worker")
        self.workers = workers
        self.seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._uniforms = np.empty(0)
        self._next = 0
        self.decisions: list[tuple[int, int]] = []
        self._everyone = list(range(workers))

    def _uniform(self) -> float:
        """One U[0,1) draw, taken from a block to keep the per-call cost small."""
        if self._next >= len(self._uniforms):
            self._uniforms = self._rng.random(4096)
            self._next = 0
        u = self._uniforms[self._next]
        self._next += 1
        return float(u)

    def _index(self, n: int) -> int:
        return min(int(self._uniform() * n), n - 1)

    def choose(
        self,
        seq: int,
        nbytes: int,
        outstanding: Sequence[float],
        alive: Sequence[bool] | None = None,
    ) -> int:
        """Pick a worker for chunk `seq` of `nbytes`.

        `outstanding[j]` is the work (bytes) queued at or in progress on worker j;
        `alive[j]` False excludes a worker (dead, being replaced).
        """
        candidates = self._everyone if alive is None or all(alive) else [j for j, a in enumerate(alive) if a]
        if not candidates:
            raise RuntimeError("no live worker to route to")
        worker = self._pick(nbytes, outstanding, candidates)
        self.decisions.append((seq, worker))
        return worker

    def observe(self, worker: int, nbytes: int, busy_s: float) -> None:
        """Feedback after a chunk finished; only speed-aware routers use it."""

    def _pick(self, nbytes: int, outstanding: Sequence[float], candidates: list[int]) -> int:
        raise NotImplementedError


class RandomRouter(Router):
    """Uniform: P(worker j) = 1/M, whatever the load."""

    name = "random"

    def _pick(self, nbytes, outstanding, candidates):
        return candidates[self._index(len(candidates))]


class RoundRobinRouter(Router):
    """Deterministic cycle over the workers: the comparison point."""

    name = "round-robin"

    def __init__(self, workers: int, seed: int = 0) -> None:
        super().__init__(workers, seed)
        self._turn = 0

    def _pick(self, nbytes, outstanding, candidates):
        for _ in range(self.workers):
            j = self._turn % self.workers
            self._turn += 1
            if j in candidates:
                return j
        return candidates[0]


class PowerOfTwoRouter(Router):
    """Power of two choices: two distinct random workers, the less loaded one wins."""

    name = "p2c"

    def _pick(self, nbytes, outstanding, candidates):
        n = len(candidates)
        if n == 1:
            return candidates[0]
        a = self._index(n)
        b = self._index(n - 1)
        if b >= a:
            b += 1
        ja, jb = candidates[a], candidates[b]
        if outstanding[jb] < outstanding[ja]:
            return jb
        return ja


class WeightedRouter(Router):
    """P(j) proportional to worker j's measured speed (bytes per busy second, EWMA)."""

    name = "weighted"
    smoothing = 0.3

    def __init__(self, workers: int, seed: int = 0) -> None:
        super().__init__(workers, seed)
        self.speed = np.ones(workers)
        self._measured = np.zeros(workers, dtype=bool)
        self._cumulative: dict[tuple[int, ...], np.ndarray] = {}

    def observe(self, worker: int, nbytes: int, busy_s: float) -> None:
        if busy_s <= 0 or nbytes <= 0:
            return
        rate = nbytes / busy_s
        if not self._measured[worker]:
            self._measured[worker] = True
            self.speed[worker] = rate
            # Unmeasured workers start at the mean of the measured ones.
            self.speed[~self._measured] = self.speed[self._measured].mean()
        else:
            self.speed[worker] += self.smoothing * (rate - self.speed[worker])
        self._cumulative.clear()

    def _pick(self, nbytes, outstanding, candidates):
        key = tuple(candidates)
        cumulative = self._cumulative.get(key)
        if cumulative is None:
            cumulative = self._cumulative[key] = np.cumsum(self.speed[candidates])
        u = self._uniform() * cumulative[-1]
        i = int(np.searchsorted(cumulative, u, side="right"))
        return candidates[min(i, len(candidates) - 1)]


def make_router(name: str, workers: int, seed: int = 0) -> Router:
    classes = {cls.name: cls for cls in (RandomRouter, PowerOfTwoRouter, WeightedRouter, RoundRobinRouter)}
    if name not in classes:
        from prep.errors import UserError

        raise UserError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}")
    return classes[name](workers, seed)
