"""numba for prep's compiled loops, made quicker to start: every kernel module imports `njit` from here.

The loops are compiled with `cache=True`, so a run's processes only load machine code. Yet numba's cache load
first refreshes its target context: it imports ~40 more of its modules and installs ~1,300 typing and lowering
templates (~0.12 s of every run's start, on the forkserver's critical path), which only compiling reads. A cached
load here skips that and initialises numba's runtime alone, which the loaded code calls. A load that misses
compiles, and numba's compiler refreshes the context itself then.

Loading a kernel whose code refers to numba's array functions (the filter rules' loop) imports numba's linear
algebra, which probes for scipy's BLAS (importing scipy.linalg, ~0.2 s where scipy is installed); prep's loops call
no BLAS, so the forkserver loads them with the probes (and cffi's) skipped: `optional_probes_skipped`.

numba's own import also imports scipy, only to check its version (~0.02 s where scipy is installed), and yaml,
only to read a `.numba_config.yaml` in the working directory (~0.02 s); both are kept out of it when they are not
imported yet (yaml only where no such file is there), and stay importable afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _kept_out(names: list[str]) -> Iterator[None]:
    """Imports of these modules (those not imported yet) fail at once inside the block, and work after it."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # an import of it raises ImportError at once
    try:
        yield
    finally:
        for name in blocked:
            del sys.modules[name]


with _kept_out(["scipy"] + ([] if os.path.exists(".numba_config.yaml") else ["yaml"])):
    from numba import njit
    from numba.core import caching
    from numba.core.cpu import CPUContext
    from numba.core.runtime import rtsys
    from numba.cpython.unsafe.numbers import trailing_zeros

__all__ = ["njit", "optional_probes_skipped", "trailing_zeros"]


def optional_probes_skipped() -> contextlib.AbstractContextManager[None]:
    """A block in which numba finds neither scipy's BLAS nor cffi, for a process that runs prep's loops alone (the
    forkserver and its workers): numba then supports neither there, which those loops never call."""
    return _kept_out(["scipy.linalg.cython_blas", "cffi"])


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
