"""prep's cache directory: what is costly to compute and the same on every run (converted backends, Unicode
class tables) is kept there, keyed by what it was computed from."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/prep, else ~/.cache/prep."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prep"
