"""A worker process: take tasks from its pipe, run the stage, put results in shared memory.

It talks only to the coordinator, over its own pipe (a killed worker cannot leave a
shared lock held), and moves data only through the slot pools. It ends when the
coordinator says so, when its pipe closes, or with the coordinator's process tree
(`bind_to_coordinator`), so a killed coordinator leaves no worker behind.

Fault injection for tests (off unless the variable is set): PREP_DEBUG_FAULT holds
`;`-separated `ACTION:SUBSTRING` rules; a task whose texts contain SUBSTRING makes the
worker `kill` itself (SIGKILL), `raise` an exception in the stage, or `hang`. The rule
`start:kill` makes every worker die at start; `start:slow` makes every worker take a
second to start (as with a large tokenizer on a busy machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import time
import traceback
from dataclasses import asdict
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from prep.core.stage import input_stats
from prep.core.threads import single_thread_env
from prep.engines.local.messages import Failed, Ready, Result
from prep.engines.local.transport import SlotPool
from prep.io.pieces import read_raw
from prep.io.records import ReadOptions
from prep.text.arrow import binary_array

if TYPE_CHECKING:
    from prep.core.stage import Stage

FAULT_ENV = "PREP_DEBUG_FAULT"
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def bind_to_coordinator(coordinator_pid: int) -> None:
    """Make a child of the coordinator (worker or writer) safe to kill and sure to die with it.

    Ctrl-C reaches the whole process group, but only the coordinator decides how the run
    stops, so SIGINT is ignored here. The child is killed when its parent (the forkserver,
    which exits with the coordinator) dies, so even a busy or hung child of a SIGKILLed
    coordinator does not outlive it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _close_forkserver_alive_fd()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        os.kill(coordinator_pid, 0)
    except ProcessLookupError:  # the coordinator died before the death signal was armed
        os._exit(1)


def name_process(name: str) -> None:
    """The name `ps`, `top` and psutil show: a worker takes its name once it is ready."""
    _prctl(_PR_SET_NAME, name.encode()[:15])


def _prctl(option: int, value: int | bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pipes closing still end the child
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _close_forkserver_alive_fd() -> None:
    """A forkserver child inherits the write end of the pipe by which the forkserver learns that the
    coordinator died; held here, a busy child would keep the forkserver (and so itself) alive forever."""
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None  # noqa: SLF001 - no public way to give it up


def _warm_up(stage: Stage, keep_columns: list[str]) -> None:
    """Run the stage once on a tiny batch before saying "ready": first calls build lookup tables (a good part
    of a second), which must not count against the first task's timeout or widen the window in which a
    killed worker takes a document's attempt with it."""
    # built from buffers: pa.array would import pandas, which no worker needs
    columns = {"id": binary_array([b"warm-up"], pa.string()),
               "text": binary_array([b"Warm up, 1 2 3: ready."], pa.string())}
    batch = pa.RecordBatch.from_pydict(columns | {k: pa.nulls(1) for k in keep_columns})
    with contextlib.suppress(Exception):  # a stage that fails here fails on the real tasks, and is told so there
        stage(batch)


def _fault_rules() -> list[tuple[str, str]]:
    spec = os.environ.get(FAULT_ENV, "")
    return [tuple(rule.split(":", 1)) for rule in spec.split(";") if ":" in rule]


def _inject_fault(rules: list[tuple[str, str]], batch: pa.RecordBatch) -> None:
    """Test hook: misbehave on purpose when a text of the batch contains a rule's substring."""
    texts = batch.column("text")
    for action, needle in rules:
        if action == "start" or not pc.any(pc.match_substring(texts, needle)).as_py():
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "hang":
            while True:
                time.sleep(60)
        elif action == "raise":
            raise RuntimeError(f"injected fault: a text contains {needle!r}")


def worker_main(
    worker_id: int,
    conn: Connection,
    config_dict: dict,
    backend: bytes | str,
    in_spec: tuple[str, int, int],
    out_spec: tuple[str, int, int],
    debug_slow: float = 1.0,
    coordinator_pid: int | None = None,
) -> None:
    single_thread_env()
    bind_to_coordinator(coordinator_pid or os.getppid())
    rules = _fault_rules()
    if ("start", "kill") in rules:
        os.kill(os.getpid(), signal.SIGKILL)
    if ("start", "slow") in rules:
        time.sleep(1.0)
    from prep.config import PipelineConfig
    from prep.core.stage import Stage

    config = PipelineConfig(**config_dict)
    read_options = ReadOptions.of(config)
    stage = Stage(config, pickle.loads(backend) if isinstance(backend, bytes) else backend)
    _warm_up(stage, config.keep_columns)
    try:
        in_pool, out_pool = SlotPool.attach(in_spec), SlotPool.attach(out_spec)
    except FileNotFoundError:  # the run ended while this worker started: nobody needs it
        return
    name_process(f"prep-worker-{worker_id}")
    try:
        conn.send(Ready(worker_id))
        while True:
            task = conn.recv()
            if task is None:
                break
            started, cpu_started = time.perf_counter(), time.process_time()  # busy is wall time, its parts CPU
            try:
                batch = in_pool.read(task.source)
                parsed = None
                if task.raw is not None:
                    parsed = read_raw(batch, task.raw, read_options, task.start, task.stop)
                    batch = parsed.batch
                elif task.start or task.stop < len(batch):
                    batch = batch.slice(task.start, task.stop - task.start)
                parsed_at = time.process_time()
                if rules:
                    _inject_fault(rules, batch)
                output, stats = stage(batch)
                t_write = time.process_time()
                loc = out_pool.write(task.out_slot, output)
                del batch, output
                finished, written_at = time.perf_counter(), time.process_time()
            except Exception:
                conn.send(Failed(task.task_id, traceback.format_exc(limit=8).strip().splitlines()[-1]))
                continue
            if debug_slow > 1.0:  # a straggler on purpose, for routing experiments
                time.sleep((finished - started) * (debug_slow - 1.0))
                finished = time.perf_counter()
            timing = {
                "busy_s": finished - started,
                "parse_s": parsed_at - cpu_started,
                "filter_s": stats.filter_s,
                "tokenize_s": stats.tokenize_s,
                "features_s": stats.features_s,
                "transport_s": written_at - t_write,
            }
            conn.send(Result(task.task_id, loc, input_stats(asdict(stats), parsed), timing))
    except (EOFError, OSError):  # the coordinator is gone: nobody wants the result
        pass
    finally:
        in_pool.close()
        out_pool.close()
