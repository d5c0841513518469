"""The shared-memory transport's read side, as the writer uses it."""

from __future__ import annotations

import secrets

import pyarrow as pa

from prep.engines.local.transport import SlotPool, release


def _batch(n: int, seed: int) -> pa.RecordBatch:
    return pa.record_batch({"id": [f"d{seed}-{i}" for i in range(n)],
                            "input_ids": pa.array([[seed + i, i] for i in range(n)], pa.list_(pa.uint32()))})


def test_read_copy_outlives_its_slot():
    """The writer releases a slot as soon as it has read it: the copy must not point into the slot, which the
    next batch then overwrites."""
    pool = SlotPool(f"prep_test_{secrets.token_hex(4)}_out", 2, 1 << 16, create=True)
    try:
        first, second = _batch(100, 1), _batch(100, 2)
        copy = pool.read_copy(pool.write(0, first))
        pool.write(0, second)  # the slot, reused
        assert copy.equals(first)
        assert pool.read_copy(pool.write(0, second)).equals(second)
        mapping = pa.py_buffer(pool._shm.buf)  # noqa: SLF001 - where the segment lies in this process
        lo, hi = mapping.address, mapping.address + mapping.size
        del mapping
        for column in copy.columns:
            for buf in column.buffers():
                assert buf is None or not lo <= buf.address < hi
        big = _batch(5000, 3)  # too large for a slot: a segment of its own, copied out too
        loc = pool.write(1, big)
        assert loc.slot == -1
        assert pool.read_copy(loc).equals(big)
        release(loc)
    finally:
        pool.close()


def test_a_writer_process_turns_transparent_huge_pages_off_for_itself_only():
    """The writers' buffers are fresh: a huge page would be zeroed whole at each first touch (prep.core.allocator)."""
    import subprocess
    import sys

    code = """
from prep.core.allocator import no_transparent_huge_pages
def thp():
    return next(line.split()[1] for line in open("/proc/self/status") if line.startswith("THP_enabled"))
before = thp()
print(before, no_transparent_huge_pages(), thp())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True", "0"]
