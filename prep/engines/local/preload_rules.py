"""Imported by the forkserver after `preload` when the pipeline has filter rule sets: their lookup table built
(or read from prep's cache) and their compiled loop loaded once (~0.2 s from numba's cache), not in every worker
before its first chunk."""

from prep.text import filters
from prep.text._numba import optional_probes_skipped

with optional_probes_skipped():
    filters.prepare(compiled=True)
