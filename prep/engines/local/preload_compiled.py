"""Imported by the forkserver after `preload` when the pipeline computes features with compiled code: the
feature tables built and the compiled features loaded once (numba: ~0.3 s and ~100 MB), not in every worker."""

import sys

from prep.text import features

# Loading compiled code, numba probes for BLAS by importing scipy.linalg (~0.2 s, when scipy is installed);
# prep's compiled loops call no BLAS, so these processes skip the probe (it then finds no BLAS).
_BLAS_PROBE = "scipy.linalg.cython_blas"
_blocked = _BLAS_PROBE not in sys.modules
if _blocked:
    sys.modules[_BLAS_PROBE] = None  # an import of it raises ImportError at once
try:
    features.prepare()
finally:
    if _blocked:
        del sys.modules[_BLAS_PROBE]
# The filter rules' table is not built here: rules are off by default, and a stage with rule sets builds it
# (~0.07 s) while it loads their compiled code (~0.5 s) anyway.
