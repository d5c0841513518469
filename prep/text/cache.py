"""prep's cache directory: what is costly to compute and the same on every run (converted backends, Unicode
class tables) is kept there, keyed by what it was computed from."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/prep, else ~/.cache/prep."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prep"


def cached_table(name: str, recipe: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """A one-dimensional uint8 table of every code point, built once per `recipe` (a description of everything
    it is built from) and read from the cache directory after; a damaged file is built again, a read-only home
    only costs the build. Written temp-then-rename, so concurrent runs are safe."""
    path = cache_dir() / f"{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.npy"
    with contextlib.suppress(OSError, ValueError):
        table = np.load(path)
        if table.shape == (0x110000,) and table.dtype == np.uint8:
            return table
    table = build()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, table)
        os.replace(tmp, path)
    return table
