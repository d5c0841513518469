"""Shared-memory transport for Arrow batches.

A pool is one shared-memory segment cut into fixed-size slots. A batch is written
as an Arrow IPC stream straight into a slot and read back zero-copy; only a small
`Location` crosses a pipe. A batch too large for a slot gets a segment of its own,
which the reader unlinks once it is done. Every segment name starts with the run's
prefix so that leftovers of a killed run can be found and removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import pyarrow as pa

SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class Location:
    """Where a serialized batch lies: a slot of the pool, or a segment of its own."""

    slot: int  # -1 when the batch has its own segment
    nbytes: int
    segment: str | None = None


def _untracked(name: str, create: bool = False, size: int = 0) -> shared_memory.SharedMemory:
    """A segment the multiprocessing resource tracker never hears of: we unlink our segments ourselves, and on
    Python < 3.13 (no `track=False`) every attach registers the name with the one tracker that all processes
    share, whose set of names then loses count when two processes attach at once (a KeyError traceback)."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *_args: None
    try:
        return shared_memory.SharedMemory(name=name, create=create, size=size)
    finally:
        resource_tracker.register = register


def _attach(name: str) -> shared_memory.SharedMemory:
    return _untracked(name)


def _create(name: str, size: int) -> shared_memory.SharedMemory:
    """A new segment whose memory is reserved now: a full /dev/shm is an OSError here, not a SIGBUS later."""
    shm = _untracked(name, create=True, size=max(size, 1))
    try:
        os.posix_fallocate(shm._fd, 0, max(size, 1))  # noqa: SLF001 - SharedMemory has no public fd
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no fallocate here: go on without the reservation
            return shm
        shm.close()
        unlink_segment(name)
        raise
    return shm


def serialized_size(batch: pa.RecordBatch) -> int:
    sink = pa.MockOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.size()


def _write_ipc(buf: memoryview, batch: pa.RecordBatch) -> None:
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(pa.py_buffer(buf)), batch.schema) as writer:
        writer.write_batch(batch)


def _read_ipc(buf: memoryview | pa.Buffer) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(buf)).read_next_batch()


class SlotPool:
    """A bounded pool of equal slots in one shared-memory segment."""

    def __init__(self, name: str, slots: int, slot_size: int, create: bool = False) -> None:
        self.name, self.slots, self.slot_size = name, slots, slot_size
        self.prefix = name.rsplit("_", 1)[0] + "_"
        self._shm = _create(name, slots * slot_size) if create else _attach(name)
        self._owner = create

    def spec(self) -> tuple[str, int, int]:
        """What another process needs to attach to this pool."""
        return self.name, self.slots, self.slot_size

    @classmethod
    def attach(cls, spec: tuple[str, int, int]) -> SlotPool:
        return cls(*spec, create=False)

    def write(self, slot: int, batch: pa.RecordBatch) -> Location:
        """Serialize `batch` into `slot`, or into its own segment when it does not fit."""
        size = serialized_size(batch)
        if size <= self.slot_size:
            start = slot * self.slot_size
            _write_ipc(self._shm.buf[start : start + size], batch)
            return Location(slot, size)
        segment = f"{self.prefix}x{secrets.token_hex(8)}"
        shm = _create(segment, size)
        try:
            _write_ipc(shm.buf[:size], batch)
        finally:
            shm.close()
        return Location(-1, size, segment)

    def read(self, loc: Location) -> pa.RecordBatch:
        """Zero-copy for a slot: the batch is valid until the slot is reused."""
        if loc.segment is None:
            start = loc.slot * self.slot_size
            return _read_ipc(self._shm.buf[start : start + loc.nbytes])
        shm = _attach(loc.segment)
        try:
            data = bytes(shm.buf[: loc.nbytes])  # own segment: copy out, so it can go at once
        finally:
            shm.close()
        return _read_ipc(memoryview(data))

    def read_copy(self, loc: Location) -> pa.RecordBatch:
        """A batch that owns its memory, so the slot can be freed at once.

        The copy is in Arrow's memory pool, which keeps freed memory for the next copy; a `bytes` of a slot's
        size is a fresh mmap, every page of it faulted in again, each time."""
        if loc.segment is not None:
            return self.read(loc)
        start = loc.slot * self.slot_size
        copy = pa.allocate_buffer(loc.nbytes)
        memoryview(copy).cast("B")[:] = self._shm.buf[start : start + loc.nbytes]
        return _read_ipc(copy)

    def close(self) -> None:
        try:
            self._shm.close()
        except BufferError:  # a zero-copy batch still points into the segment: it is unmapped when that goes
            self._shm._mmap = None  # noqa: SLF001 - else SharedMemory.__del__ retries and prints the error
        if self._owner:
            unlink_segment(self.name)


def release(loc: Location) -> None:
    """The reader is done with `loc`: unlink its own segment if it had one."""
    if loc.segment is not None:
        unlink_segment(loc.segment)


def unlink_segment(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SHM_DIR / name)


def remove_leftovers(prefix: str) -> list[str]:
    """Remove every segment of a previous run with this prefix (e.g. after a SIGKILL): regular files of this
    user only; anything else of that name is not ours and stays."""
    removed = []
    if SHM_DIR.is_dir():
        for path in SHM_DIR.glob(prefix + "*"):
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    unlink_segment(path.name)
                    removed.append(path.name)
    return removed
