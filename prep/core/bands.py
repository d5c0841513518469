"""The LSH band index of near dedup: band key -> ordinal of the first kept document with that key, per band.

Per band, sorted runs of (key, ordinal) in numpy, merged as they grow (a log-structured merge: a run is merged
into the one before it once that one is at most twice its size, so a band has O(log n) runs, each searched
with `searchsorted`, vectorised over a batch). A key is added only when absent, so each key is in exactly one
run and a lookup's answer does not depend on how the runs happen to be cut. Past the memory budget, the
in-memory runs are merged into one that is written to a `.npy` file and read back memory-mapped; files merge
by the same rule. 12 bytes an entry (uint64 key, uint32 ordinal), where a Python dict costs about 110.

The same store serves the local writer (all bands) and each band-index actor of the Ray engine (its bands).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np

ENTRY_BYTES = 12  # uint64 band key + uint32 ordinal
_Run = tuple[np.ndarray, np.ndarray]  # (sorted keys uint64, their ordinals uint32)


class BandStore:
    """Band key -> first ordinal, for `bands` bands; in memory up to `memory` bytes, then in .npy files."""

    def __init__(self, bands: int, memory: int) -> None:
        self.memory = memory
        self.mem: list[list[_Run]] = [[] for _ in range(bands)]
        self.disk: list[list[_Run]] = [[] for _ in range(bands)]
        self.mem_bytes = 0
        self.entries = [0] * bands
        self._dir: tempfile.TemporaryDirectory | None = None
        self._files = 0

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(n, bands) uint64 keys -> (n, bands) int64: the ordinal stored for each key, -1 where absent."""
        found = np.full(keys.shape, -1, np.int64)
        for band in range(keys.shape[1]):
            order = np.argsort(keys[:, band])  # sorted needles: numpy's search starts from the last answer
            col = keys[order, band]
            for run_keys, run_ords in self.mem[band] + self.disk[band]:
                pos = np.minimum(np.searchsorted(run_keys, col), len(run_keys) - 1)
                hit = np.flatnonzero(run_keys[pos] == col)
                found[order[hit], band] = run_ords[pos[hit]]
        return found

    def add(self, keys: np.ndarray, ords: np.ndarray, new: np.ndarray) -> None:
        """Store keys[new] (each absent and given once: the caller looked them up) with their rows' ordinals."""
        if len(ords) and int(ords.max()) >= 2**32:
            raise RuntimeError("dedup: more than 2**32 kept documents")
        for band in range(keys.shape[1]):
            rows = np.flatnonzero(new[:, band])
            if not len(rows):
                continue
            order = np.argsort(keys[rows, band])
            self.mem[band].append((keys[rows, band][order], ords[rows][order].astype(np.uint32)))
            _compact(self.mem[band], _in_memory)
            self.entries[band] += len(rows)
            self.mem_bytes += len(rows) * ENTRY_BYTES
        if self.mem_bytes > self.memory:
            self.spill()

    def spill(self) -> None:
        """Merge each band's in-memory runs into one, write it to a file, and read it memory-mapped."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="prep-bands-")
        for band, runs in enumerate(self.mem):
            if runs:
                self.disk[band].append(self._save(*_merged(runs)))
                _compact(self.disk[band], self._save)
            runs.clear()
        self.mem_bytes = 0

    def _save(self, keys: np.ndarray, ords: np.ndarray) -> _Run:
        self._files += 1
        paths = [os.path.join(self._dir.name, f"{self._files}.{part}.npy") for part in ("k", "o")]
        run = []
        for path, array in zip(paths, (keys, ords), strict=True):
            np.save(path, array)
            run.append(np.load(path, mmap_mode="r"))
        return run[0], run[1]

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    def close(self) -> None:
        self.mem = [[] for _ in self.mem]
        self.disk = [[] for _ in self.disk]
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _in_memory(keys: np.ndarray, ords: np.ndarray) -> _Run:
    return keys, ords


def _merged(runs: list[_Run]) -> _Run:
    keys = np.concatenate([k for k, _ in runs])
    ords = np.concatenate([o for _, o in runs])
    order = np.argsort(keys)
    return keys[order], ords[order]


def _compact(runs: list[_Run], save: Callable[[np.ndarray, np.ndarray], _Run]) -> None:
    """Merge the newest run into the one before while that one is at most twice its size (file runs: the
    merged run goes to a new file and the two old files are removed)."""
    while len(runs) > 1 and len(runs[-2][0]) <= 2 * len(runs[-1][0]):
        pair = [runs.pop(), runs.pop()]
        runs.append(save(*_merged(pair)))
        for run_keys, run_ords in pair:
            for array in (run_keys, run_ords):
                if isinstance(array, np.memmap):
                    os.unlink(array.filename)
