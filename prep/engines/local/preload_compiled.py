"""Imported by the forkserver after `preload` when the pipeline computes features with compiled code: the
feature tables built and the compiled features loaded once (numba: ~0.3 s and ~100 MB), not in every worker."""

import sys

from prep.text import features

# Loading compiled code, numba's target context imports two optional libraries only to support them: scipy's BLAS
# (a probe that imports scipy.linalg, ~0.2 s when scipy is installed) and cffi (whose FFI() builds a C parser,
# ~0.04 s). prep's compiled loops call neither, so these processes load without them (numba then finds neither).
_PROBES = ("scipy.linalg.cython_blas", "cffi")
_blocked = [name for name in _PROBES if name not in sys.modules]
for name in _blocked:
    sys.modules[name] = None  # an import of it raises ImportError at once
try:
    features.prepare()
finally:
    for name in _blocked:
        del sys.modules[name]
# The filter rules' table is not built here: rules are off by default, and a stage with rule sets builds it
# (~0.07 s) while it loads their compiled code (~0.5 s) anyway.
