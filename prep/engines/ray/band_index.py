"""Near dedup on Ray: the LSH band index sharded across actors by band.

Band b belongs to actor b mod K. The driver still takes every decision in seq order (prep.core.dedup.Deduper,
with its exact index, ids and similarity data), but its band index is `ShardedBands`: a batch's lookup sends
each actor the columns of its bands, all at once, and reassembles the answers; the kept documents' new keys go
to the same actors. An actor runs its calls in the order the driver sent them, so a lookup sees every key
added before it, and the decisions are those of the local writer's single `BandStore`. Each actor holds its
bands in a `BandStore` with its share of the memory budget, spilling to its node's disk past it.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from prep.core.bands import BandStore
from prep.core.dedup import INDEX_FILE, Deduper, DedupSettings


class BandActor:
    """The band index of some bands (`bands`: their numbers, for `held`)."""

    def __init__(self, bands: list[int], memory: int) -> None:
        self.band_numbers = bands
        self.store = BandStore(len(bands), memory)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        return self.store.lookup(keys)

    def add(self, keys: np.ndarray, ords: np.ndarray, new: np.ndarray) -> None:
        self.store.add(keys, ords, new)

    def held(self) -> dict:
        """Which bands this actor holds and how many keys of each: what the tests check the split by."""
        return {"bands": self.band_numbers, "entries": self.store.entries, "spilled": self.store.spilled}

    def close(self) -> None:
        self.store.close()  # its spill files: ray.kill runs no finaliser


class ShardedBands:
    """`prep.core.dedup.Bands` over band-index actors: column j of a batch goes to the actor owning band j."""

    def __init__(self, ray: Any, bands: int, actors: int, memory: int) -> None:
        self.ray = ray
        self.owned = [list(range(k, bands, actors)) for k in range(actors)]
        cls = ray.remote(BandActor).options(num_cpus=0, max_restarts=0, scheduling_strategy="SPREAD")
        self.actors = [cls.remote(owned, memory // actors) for owned in self.owned]
        self.adding: list = []  # refs of add calls not yet known to have succeeded

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        refs = [a.lookup.remote(np.ascontiguousarray(keys[:, owned])) for a, owned in zip(self.actors, self.owned,
                                                                                          strict=True)]
        answers = self.ray.get(self.adding + refs)[len(self.adding):]  # an add that failed raises here
        self.adding = []
        found = np.empty(keys.shape, np.int64)
        for owned, answer in zip(self.owned, answers, strict=True):
            found[:, owned] = answer
        return found

    def add(self, keys: np.ndarray, ords: np.ndarray, new: np.ndarray) -> None:
        for actor, owned in zip(self.actors, self.owned, strict=True):
            if new[:, owned].any():
                self.adding.append(actor.add.remote(np.ascontiguousarray(keys[:, owned]), ords,
                                                    np.ascontiguousarray(new[:, owned])))

    def held(self) -> list[dict]:
        return self.ray.get([a.held.remote() for a in self.actors])

    @property
    def spilled(self) -> bool:
        return any(h["spilled"] for h in self.held())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: an actor that died cannot remove its files
            self.ray.get([actor.close.remote() for actor in self.actors])
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def sharded_deduper(ray: Any, settings: DedupSettings, out: Path, committed: int, actors: int) -> Deduper:
    """The driver's Deduper with its band index on `actors` band-index actors (at most one a band), reloaded
    from the first `committed` bytes of the output's INDEX_FILE (a resumed run)."""
    bands = None
    if settings.near:
        bands = ShardedBands(ray, settings.bands, min(actors, settings.bands), settings.memory // 2)
    deduper = Deduper(settings, bands)
    deduper.load(out / INDEX_FILE, committed)
    return deduper


def band_actors(workers: int) -> int:
    """One band-index actor per 16 workers, at least 2: lookups are light next to the workers' signatures."""
    return max(2, math.ceil(workers / 16))
