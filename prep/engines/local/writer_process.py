"""The local engine's writer process: messages in from the coordinator, shards out through ShardWriter.

Results arrive as shared-memory locations (copied out, then the slot is released); the writer acknowledges
each, says which shards it committed, and commits nothing once its coordinator is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import pyarrow as pa

from prep.core.dedup import DedupSettings
from prep.engines.local.transport import Location, SlotPool, release
from prep.io.trainer_formats import OutputSpec
from prep.io.writer import ShardWriter


def writer_main(conn: Connection, out: str, out_spec: tuple, shard_bytes: int, compression: str,
                start_seq: int, entries: list[dict], coordinator_pid: int | None = None,
                formats: OutputSpec | None = None, dedup: DedupSettings | None = None,
                encoder_threads: int = 1) -> None:
    """The writer process: messages in from the coordinator, shards out to disk.

    It commits nothing once its coordinator is gone: a run resumed after a SIGKILL must
    not find the journal growing behind its back.
    """
    from prep.core.allocator import no_transparent_huge_pages
    from prep.engines.local.worker import bind_to_coordinator, name_process

    coordinator_pid = coordinator_pid or os.getppid()
    bind_to_coordinator(coordinator_pid)
    name_process("prep-writer")
    no_transparent_huge_pages()

    def coordinator_alive() -> None:
        try:
            os.kill(coordinator_pid, 0)
        except ProcessLookupError:
            os._exit(1)

    try:
        pool = SlotPool.attach(out_spec)
    except FileNotFoundError:  # the run ended while this writer started
        return
    core = ShardWriter(Path(out), shard_bytes, compression, start_seq, entries, coordinator_alive, formats, dedup,
                       encoder_threads)
    cpu0 = time.process_time()  # the writer's CPU from here (its encoding thread's too) is the run's, not its start's
    main_cpu0, waited = time.thread_time(), 0.0  # this thread's CPU, and its time waiting for a message
    told = start_seq
    try:
        while True:
            t = time.perf_counter()
            message = conn.recv()
            waited += time.perf_counter() - t
            kind = message[0]
            if kind == "chunk":
                _, seq, info = message
                committed = core.add_chunk(seq, info)
            elif kind == "part":
                _, seq, start, stop, loc, stats = message
                table = None
                if isinstance(loc, Location):
                    table = pa.Table.from_batches([pool.read_copy(loc)])
                    release(loc)
                    conn.send(("received", seq, loc.slot))
                committed = core.add_part(seq, start, stop, table, stats)
            elif kind == "flush":  # the last chunk came: commit the last shard now, while workers remain
                committed = core.commit()
            elif kind == "finish":
                t0 = time.perf_counter()
                _, extra, routing_rows = message
                extra.setdefault("timings", {}).update(
                    writer_cpu_s=round(time.process_time() - cpu0, 4),
                    # the one thread that takes every result in order: the run waits for it when it never waits
                    writer_main_cpu_s=round(time.thread_time() - main_cpu0, 4), writer_waiting_s=round(waited, 4))
                manifest = core.finish(extra, routing_rows)
                conn.send(("finished", manifest, time.perf_counter() - t0))
                return
            else:
                raise RuntimeError(f"writer: unknown message {kind!r}")
            for entry in committed:
                conn.send(("shard", entry["shard"], entry["rows"], entry["last_seq"]))
            if core.next_seq != told:  # how far the chunks are written in order: the coordinator admits by it
                told = core.next_seq
                conn.send(("written", told))
    except EOFError:  # the coordinator is gone
        pass
    except OSError as exc:  # disk full, permission denied, a vanished directory: say it in one line
        with contextlib.suppress(OSError):
            conn.send(("error", _describe_os_error(exc), True))
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc(), False))
    finally:
        pool.close()


def _describe_os_error(exc: OSError) -> str:
    """`No space left on device (path)`, also for pyarrow's errors, which carry the errno only in their text."""
    code = exc.errno
    if code is None and (found := re.search(r"\[errno (\d+)\]", str(exc))):
        code = int(found.group(1))
    what = os.strerror(code) if code else str(exc)
    return f"{what} ({exc.filename})" if exc.filename else what
