"""Imported by the forkserver after `preload` when the pipeline computes features with compiled code: the
feature tables built and the compiled features loaded once (numba: ~0.25 s and ~100 MB), not in every worker."""

from prep.text import features
from prep.text._numba import optional_probes_skipped

with optional_probes_skipped():
    features.prepare()
