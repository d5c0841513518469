"""Imported once by the forkserver, before any worker forks from it.

Workers (and their replacements after a crash) then start with the heavy modules imported, the feature
tables built and the compiled features loaded, instead of paying for them on their critical path.
"""

import sys

from prep.core import stage  # noqa: F401 - imported for its side effect: being loaded
from prep.engines.local import worker  # noqa: F401
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


class _NoPandas:
    """pyarrow imports pandas on first use of some conversions (pa.array of Python objects, to_numpy, pa.scalar:
    ~0.3 s and ~40 MB in each process that meets one, e.g. a worker reading a malformed record). No child of this
    process needs pandas, and pyarrow takes its pandas-free paths when pandas cannot be found (a None entry in
    sys.modules would not do: pyarrow's compiled import returns it)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"no module named {name!r} in prep's worker processes", name=name)


sys.meta_path.insert(0, _NoPandas())
