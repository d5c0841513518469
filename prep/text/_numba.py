"""numba for prep's compiled loops, made quicker to start: every kernel module imports `njit` from here.

The loops are compiled with `cache=True`, so a run's processes only load machine code. Yet numba's cache load
first refreshes its target context: it imports ~40 more of its modules and installs ~1,300 typing and lowering
templates (~0.12 s of every run's start, on the forkserver's critical path), which only compiling reads. A cached
load here skips that and initialises numba's runtime alone, which the loaded code calls. A load that misses
compiles, and numba's compiler refreshes the context itself then.

numba's own import also imports scipy, only to check its version (~0.02 s where scipy is installed), and yaml,
only to read a `.numba_config.yaml` in the working directory (~0.02 s); both are kept out of it when they are not
imported yet (yaml only where no such file is there), and stay importable afterwards.
"""

from __future__ import annotations

import os
import sys

_UNUSED = ["scipy"] + ([] if os.path.exists(".numba_config.yaml") else ["yaml"])
_blocked = [name for name in _UNUSED if name not in sys.modules]
for _name in _blocked:
    sys.modules[_name] = None  # an import of it raises ImportError at once
try:
    from numba import njit
    from numba.core import caching
    from numba.core.cpu import CPUContext
    from numba.core.runtime import rtsys
    from numba.cpython.unsafe.numbers import trailing_zeros
finally:
    for _name in _blocked:
        del sys.modules[_name]

__all__ = ["njit", "trailing_zeros"]


def _load_overload(self: caching.Cache, sig: object, target_context: object) -> object:
    """numba's `Cache.load_overload` without its refresh of the target context (see the module's doc), for the
    CPU target that prep compiles for; another target (a user's CUDA kernels, say) loads as numba loads it."""
    if not isinstance(target_context, CPUContext):
        return _numbas_load(self, sig, target_context)
    rtsys.initialize(target_context)
    with self._guard_against_spurious_io_errors():  # noqa: SLF001 - numba's own load, as it calls it
        return self._load_overload(sig, target_context)  # noqa: SLF001


# Only where numba's cache loads as this module expects (as 0.68 does): else numba's own load stays.
_NEEDED = ("load_overload", "_load_overload", "_guard_against_spurious_io_errors")
_numbas_load = caching.Cache.load_overload
if all(hasattr(caching.Cache, name) for name in _NEEDED):
    caching.Cache.load_overload = _load_overload
