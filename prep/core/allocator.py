"""Memory settings of the processes that stream MiB-sized buffers: glibc's for the coordinator cutting input,
transparent huge pages off for the writers.

By default glibc serves each allocation of over 128 KiB (its threshold then adapts, up to 32 MiB) with a fresh
mmap, and returns it on free: every MiB read, sliced or copied is then faulted in again page by page, which
cost the coordinator's feed about a third of its CPU. With a fixed threshold of 8 MiB such buffers come from the
heap and are reused; up to 16 MiB freed at its top stays mapped (the memory this may keep).
"""

import contextlib
import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_PR_SET_THP_DISABLE = 41  # linux/prctl.h: this process's later page faults get no transparent huge page
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 16 << 20


def reuse_freed_buffers() -> bool:
    """Apply the settings to this process; False where the C library has no mallopt (not glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return False


def no_transparent_huge_pages() -> bool:
    """For a writer: pyarrow's mimalloc asks for huge pages (MADV_HUGEPAGE on its arenas), and a writer's buffers are
    short-lived and always fresh, so each first touch zeroed a whole 2 MiB page (and, in pages inherited from the
    forkserver, copied one): ~30 % of the local writer's CPU, varying from run to run. False where not Linux."""
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    return False
