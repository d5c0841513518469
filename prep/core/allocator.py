"""glibc malloc settings for a process that streams MiB-sized buffers (the coordinator cutting input).

By default glibc serves each allocation of over 128 KiB (its threshold then adapts, up to 32 MiB) with a fresh
mmap, and returns it on free: every MiB read, sliced or copied is then faulted in again page by page, which
cost the coordinator's feed about a third of its CPU. With a fixed threshold of 8 MiB such buffers come from the
heap and are reused; up to 16 MiB freed at its top stays mapped (the memory this may keep).
"""

import contextlib
import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 16 << 20


def reuse_freed_buffers() -> bool:
    """Apply the settings to this process; False where the C library has no mallopt (not glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return False
