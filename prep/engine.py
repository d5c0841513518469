"""The local engine: a coordinator that routes chunks to worker processes.

Data flows one way: the Source yields chunks, the Router picks a worker, the chunk
goes through the input slot pool, the worker's Stage writes its output to the
output slot pool, and the Writer re-orders and writes shards. The coordinator is the
only process that talks to everyone, over one private pipe per process; it keeps
each chunk's input in its slot until every row is accounted for, so a dead worker's
tasks can be routed again, retried, bisected and, for a poison document, quarantined.

A worker's death is seen at once (its process sentinel); a hung task is killed after
`chunk_timeout_s` per `chunk_bytes` of its text. The children die with the coordinator,
however it ends, and the next run in the same output directory removes what a killed
one left in /dev/shm.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.connection import wait
from pathlib import Path

from prep.chunk import Chunk
from prep.config import PipelineConfig
from prep.errors import UserError
from prep.formats import output_spec
from prep.retry import CHUNK_ATTEMPTS, attempts_allowed, halves, quarantine_record
from prep.router import Router
from prep.theory import expected_imbalance_uniform
from prep.tokenizer import TokenizerInfo
from prep.transport import Location, SlotPool, release, remove_leftovers
from prep.worker import Task, single_thread_env, worker_main
from prep.writer import writer_main

GIVE_UP_QUARANTINED = 10  # documents quarantined by faults, with none written yet: the stage is broken


class RunFailed(Exception):
    """The run cannot go on (e.g. workers keep dying at start); said in one line, exit 1."""


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the coordinator."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def shm_prefix(out: Path) -> str:
    """Segment names derive from the output directory, so the next run there finds leftovers."""
    return "prep_" + hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10] + "_"


@dataclass
class _Worker:
    index: int
    process: mp.Process
    conn: object
    started_at: float
    ready: bool = False
    queue: deque = field(default_factory=deque)  # task ids, in the order sent
    head_since: float = 0.0  # when the task at the head of the queue started (as far as we know)
    kill_reason: str | None = None


@dataclass
class _TaskState:
    task: Task
    nbytes: int
    attempts: int = 0
    max_attempts: int = CHUNK_ATTEMPTS
    worker: int = -1
    queued_at: float = 0.0


@dataclass
class _ChunkState:
    chunk: Chunk
    loc: Location
    slot: int  # the input slot it holds (also when the batch went to a segment of its own)
    open_tasks: int = 0


@dataclass
class WorkerAccount:
    """Per-worker accounting for the manifest and the run report."""

    worker: int
    chunks: int = 0
    bytes: int = 0
    documents: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    idle_s: float = 0.0
    queue_wait_s: float = 0.0
    tokenize_s: float = 0.0
    features_s: float = 0.0
    transport_s: float = 0.0
    restarts: int = 0


@dataclass
class EngineResult:
    manifest: dict
    accounts: list[WorkerAccount]
    faults: list[str]


class LocalEngine:
    """Run one pipeline over a chunk stream with M worker processes."""

    def __init__(
        self,
        config: PipelineConfig,
        tokenizer: TokenizerInfo,
        router: Router,
        out: Path,
        *,
        start_seq: int = 0,
        journal_entries: list[dict] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        slow_workers: dict[int, float] | None = None,
        manifest_base: dict | None = None,
    ) -> None:
        self.config, self.tokenizer, self.router, self.out = config, tokenizer, router, out
        self.workers_n = router.workers
        self.start_seq = start_seq
        self.journal_entries = journal_entries or []
        self.on_progress = on_progress or (lambda _bytes, _docs: None)
        self.slow_workers = slow_workers or {}
        self.window = max(4, 4 * self.workers_n)
        self.prefix = shm_prefix(out)
        self.faults: list[str] = []
        self.accounts = [WorkerAccount(j) for j in range(self.workers_n)]
        self.manifest_base = manifest_base or {}
        self.routing: dict[str, list] = {
            k: [] for k in ("seq", "start", "stop", "attempt", "worker", "bytes", "queued_at", "started_at",
                            "finished_at")
        }

    # ----------------------------------------------------------------- set-up
    def _spawn(self, target: Callable, args: tuple, name: str) -> mp.Process:
        """Start a child. SIGINT or SIGTERM arriving meanwhile waits until it is registered: clean-up must know
        every process there is (one it missed would outlive the run)."""
        process = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        self._deferring = True
        try:
            process.start()
            self.children.append(process)
        finally:
            self._deferring = False
        if self._pending_signal is not None:
            raise Interrupted(self._pending_signal)
        return process

    def _start_worker(self, index: int) -> _Worker:
        parent, child = self.ctx.Pipe()
        backend = self.tokenizer.instance or self.tokenizer.backend
        process = self._spawn(worker_main, (index, child, self.config.to_dict(), backend,
                                            self.in_pool.spec(), self.out_pool.spec(),
                                            self.slow_workers.get(index, 1.0), os.getpid()), f"prep-worker-{index}")
        child.close()
        return _Worker(index, process, parent, time.perf_counter())

    def run(self, chunks: Iterator[Chunk]) -> EngineResult:
        single_thread_env()
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["prep.preload"])
        self.workers: list[_Worker] = []
        self.writer = None
        self.children: list[mp.Process] = []
        self.pools: list[SlotPool] = []
        self._deferring, self._pending_signal = False, None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def interrupt(signum, _frame):
            if self._deferring:
                self._pending_signal = signum
                return
            raise Interrupted(signum)

        for s in previous:
            signal.signal(s, interrupt)
        try:
            remove_leftovers(self.prefix)  # of a killed run in this output directory
            chunk_bytes = self.config.chunk_bytes
            self.in_pool = self._create_pool("in", 2 * chunk_bytes + 2**18)
            self.out_pool = self._create_pool("out", 6 * chunk_bytes + 2**20)
            self._start_forkserver()
            return self._run(chunks)
        finally:
            for s in previous:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(s, signal.SIG_IGN)
            try:
                self._shutdown()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    def _start_forkserver(self) -> None:
        """Start the forkserver while SIGINT is ignored: the disposition passes through its exec to every worker
        and writer from birth, so a Ctrl-C to the process group (a terminal's) reaches only the coordinator, even
        while a child is still starting."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _create_pool(self, kind: str, slot_size: int) -> SlotPool:
        try:
            pool = SlotPool(self.prefix + kind, self.window, slot_size, create=True)
        except OSError as exc:
            raise RunFailed(f"cannot reserve {self.window * slot_size / 2**20:.0f} MiB of shared memory in "
                            f"/dev/shm ({exc.strerror or exc}); use fewer --workers or a smaller --chunk-bytes"
                            ) from None
        self.pools.append(pool)
        return pool

    def _run(self, chunks: Iterator[Chunk]) -> EngineResult:
        writer_conn, child = self.ctx.Pipe()
        self.writer = self._spawn(writer_main, (child, str(self.out), self.out_pool.spec(), self.config.shard_bytes,
                                                self.config.compression, self.start_seq, self.journal_entries,
                                                os.getpid(), output_spec(self.config)), "prep-writer")
        child.close()
        self.writer_conn = writer_conn
        self.t0 = time.perf_counter()
        self.workers = [self._start_worker(j) for j in range(self.workers_n)]

        self.free_in = list(range(self.window))
        self.free_out = list(range(self.window))
        self.chunks: dict[int, _ChunkState] = {}
        self.tasks: dict[int, _TaskState] = {}
        self.ready_tasks: deque[int] = deque()  # tasks waiting for an output slot or a live worker
        self.outstanding = [0] * self.workers_n
        self.written_upto = self.start_seq
        self.next_task_id = 0
        self.tasks_done = 0
        self.quarantined = 0
        self.deaths = 0
        self.startup_failures = 0
        source_done = False
        pending_chunk: Chunk | None = None

        while True:
            # Feed: new chunks while the window, the input slots and the output slots allow.
            while not source_done and self.free_in and len(self.chunks) < self.window:
                if pending_chunk is None:
                    pending_chunk = next(chunks, None)
                    if pending_chunk is None:
                        source_done = True
                        break
                chunk = pending_chunk
                if chunk.seq < self.start_seq:  # committed by an earlier run (--resume)
                    pending_chunk = None
                    self.on_progress(chunk.input_bytes, 0)
                    continue
                if chunk.seq >= self.written_upto + self.window:
                    break
                pending_chunk = None
                self._admit(chunk)
            self._dispatch()
            if source_done and not self.chunks:
                break
            self._wait_and_handle()

        return self._finish()

    # ------------------------------------------------------------- the chunk flow
    def _admit(self, chunk: Chunk) -> None:
        info = {
            "rows": chunk.batch.num_rows,
            "text_bytes": chunk.text_bytes,
            "documents_in": chunk.documents_in,
            "quarantine": chunk.quarantine,
        }
        self._send_writer(("chunk", chunk.seq, info))
        if chunk.batch.num_rows == 0:  # only bad records: nothing to compute, the writer has it all
            self.on_progress(chunk.input_bytes, chunk.documents_in)
            return
        slot = self.free_in.pop()
        try:
            loc = self.in_pool.write(slot, chunk.batch)
        except OSError as exc:  # a huge document needs a segment of its own and /dev/shm is full
            raise RunFailed(f"cannot put chunk {chunk.seq} ({chunk.text_bytes / 2**20:.0f} MiB of text, from "
                            f"{chunk.source}) in shared memory: {exc.strerror or exc}") from None
        state = _ChunkState(chunk, loc, slot)
        self.chunks[chunk.seq] = state
        rows = chunk.batch.num_rows
        self._new_task(state, 0, rows, attempts_allowed(0, rows, whole_chunk=True))

    def _new_task(self, state: _ChunkState, start: int, stop: int, max_attempts: int) -> None:
        task_id = self.next_task_id
        self.next_task_id += 1
        chunk = state.chunk
        nbytes = chunk.text_bytes if (start, stop) == (0, chunk.batch.num_rows) else max(
            1, chunk.text_bytes * (stop - start) // max(1, chunk.batch.num_rows)
        )
        task = Task(task_id, chunk.seq, start, stop, state.loc, -1)
        self.tasks[task_id] = _TaskState(task, nbytes, max_attempts=max_attempts)
        state.open_tasks += 1
        self.ready_tasks.append(task_id)

    def _dispatch(self) -> None:
        alive = [w.process.is_alive() and w.kill_reason is None for w in self.workers]
        while self.ready_tasks and self.free_out and any(alive):
            task_id = self.ready_tasks.popleft()
            ts = self.tasks[task_id]
            out_slot = self.free_out.pop()
            ts.task = Task(ts.task.task_id, ts.task.seq, ts.task.start, ts.task.stop, ts.task.source, out_slot)
            j = self.router.choose(ts.task.seq, ts.nbytes, self.outstanding, alive)
            worker = self.workers[j]
            ts.worker, ts.queued_at = j, time.perf_counter()
            if not worker.queue:
                worker.head_since = ts.queued_at
            worker.queue.append(task_id)
            self.outstanding[j] += ts.nbytes
            with contextlib.suppress(OSError):  # dead: its sentinel fires next and the task is re-routed
                worker.conn.send(ts.task)

    def _wait_and_handle(self) -> None:
        objects = [self.writer_conn, self.writer.sentinel]
        for w in self.workers:
            objects += [w.conn, w.process.sentinel]
        timeout = self._check_timeouts()
        for ready in wait(objects, timeout=timeout):
            if ready is self.writer_conn:
                self._on_writer()
            elif ready is self.writer.sentinel:
                while self.writer_conn.poll():
                    self._on_writer()
                self._writer_died()
            else:
                for w in list(self.workers):
                    if ready is w.conn and not w.conn.closed:
                        self._drain(w, at_most=1)
                    elif ready is w.process.sentinel:
                        self._on_worker_death(w)

    def _check_timeouts(self) -> float:
        """Kill a worker whose current task ran past its timeout; return how long to wait for the next one.

        The chunk timeout is for a task of `chunk_bytes`; a larger task (one huge document)
        gets proportionally longer, so that size alone never looks like a hang.
        """
        now = time.perf_counter()
        wait_s = 0.5
        for w in self.workers:
            if w.queue and w.ready and w.kill_reason is None:
                nbytes = self.tasks[w.queue[0]].nbytes
                limit = self.config.chunk_timeout_s * max(1.0, nbytes / self.config.chunk_bytes)
                if now - w.head_since > limit:
                    w.kill_reason = f"timeout: no result after {limit:g} s"
                    w.process.kill()
                else:
                    wait_s = min(wait_s, w.head_since + limit - now)
        return max(wait_s, 0.01)

    def _drain(self, w: _Worker, at_most: int | None = None) -> None:
        """Handle the messages waiting in a worker's pipe (all of them, before its death is handled)."""
        handled = 0
        while at_most is None or handled < at_most:
            try:
                if not w.conn.poll():
                    return
                message = w.conn.recv()
            except (EOFError, OSError):
                return  # dying; the sentinel handles it
            self._on_worker_message(w, message)
            handled += 1

    def _on_worker_message(self, w: _Worker, message: tuple) -> None:
        kind = message[0]
        now = time.perf_counter()
        if kind == "ready":
            w.ready = True
            w.head_since = now  # tasks sent during start-up begin now
            self.startup_failures = 0
            return
        task_id = message[1]
        ts = self.tasks.get(task_id)
        if ts is None or not w.queue or w.queue[0] != task_id:
            return
        w.queue.popleft()
        self.outstanding[w.index] -= ts.nbytes
        w.head_since = now
        if kind == "failed":
            self.free_out.append(ts.task.out_slot)
            self._task_fault(ts, "exception: " + message[2].strip().splitlines()[-1])
            return
        _, _, loc, stats, timing = message
        del self.tasks[task_id]
        self.tasks_done += 1
        self.router.observe(w.index, ts.nbytes, timing["busy_s"])
        account = self.accounts[w.index]
        account.chunks += 1
        account.bytes += ts.nbytes
        account.documents += stats["documents"]
        account.tokens += stats["tokens"]
        for key in ("busy_s", "tokenize_s", "features_s", "transport_s"):
            setattr(account, key, getattr(account, key) + timing[key])
        started = max(ts.queued_at, now - timing["busy_s"])
        account.queue_wait_s += started - ts.queued_at
        task = ts.task
        for key, value in zip(
            self.routing,
            (task.seq, task.start, task.stop, ts.attempts, w.index, ts.nbytes, ts.queued_at - self.t0,
             started - self.t0, now - self.t0),
            strict=True,
        ):
            self.routing[key].append(value)
        if loc.segment is not None:  # the output went to a segment of its own; the slot was never used
            self.free_out.append(task.out_slot)
        self._send_writer(("part", task.seq, task.start, task.stop, loc, stats))
        self._task_closed(task.seq)

    def _task_closed(self, seq: int) -> None:
        state = self.chunks[seq]
        state.open_tasks -= 1
        if state.open_tasks == 0:
            del self.chunks[seq]
            self.free_in.append(state.slot)
            release(state.loc)
            self.on_progress(state.chunk.input_bytes, state.chunk.documents_in)

    def _task_fault(self, ts: _TaskState, reason: str) -> None:
        """Retry, then bisect, then quarantine: a poison document ends isolated, the rest written."""
        ts.attempts += 1
        task = ts.task
        self.faults.append(f"chunk {task.seq} rows {task.start}-{task.stop}: {reason}")
        if ts.attempts < ts.max_attempts:
            self.ready_tasks.appendleft(task.task_id)
            return
        del self.tasks[task.task_id]
        state = self.chunks[task.seq]
        if task.stop - task.start > 1:
            for start, stop, allowed in halves(task.start, task.stop):
                self._new_task(state, start, stop, allowed)
        else:
            row = state.chunk.batch.slice(task.start, 1).to_pylist()[0]
            if self.config.strict:
                raise UserError(f"{state.chunk.source}, document {row['id']}: {reason} (strict mode)")
            self.quarantined += 1
            if self.quarantined >= GIVE_UP_QUARANTINED and self.tasks_done == 0:
                raise RunFailed(f"no document gets through the stage ({self.quarantined} quarantined, none "
                                f"written; last: {reason})")
            record = quarantine_record(state.chunk.source, row, reason)
            stats = {"documents": 0, "filtered": 0, "tokens": 0, "quarantine": [record]}
            self._send_writer(("part", task.seq, task.start, task.stop, None, stats))
        self._task_closed(task.seq)

    def _on_worker_death(self, w: _Worker) -> None:
        """Re-route a dead worker's tasks: the one it was computing is charged a fault, the rest are not."""
        self._drain(w)  # results it sent before it died still count
        reason = w.kill_reason or "worker " + _exit_reason(w.process.exitcode)
        w.conn.close()
        self.deaths += 1
        self.accounts[w.index].restarts += 1
        if not w.ready:
            self.startup_failures += 1
            if self.startup_failures >= 3 * self.workers_n:
                raise RunFailed(f"workers keep dying at start ({self.startup_failures} times in a row; last: "
                                f"{reason})")
        if self.deaths > 20 + 3 * self.next_task_id:
            raise RunFailed(f"workers keep dying ({self.deaths} times; last: {reason})")
        queue = list(w.queue)
        w.queue.clear()
        self.workers[w.index] = self._start_worker(w.index)
        for task_id in reversed(queue[1:] if w.ready else queue):  # never started: route again, uncharged
            ts = self.tasks[task_id]
            self.outstanding[w.index] -= ts.nbytes
            self.free_out.append(ts.task.out_slot)
            self.ready_tasks.appendleft(task_id)
        if queue and w.ready:
            ts = self.tasks[queue[0]]
            self.outstanding[w.index] -= ts.nbytes
            self.free_out.append(ts.task.out_slot)
            self._task_fault(ts, reason)

    def _writer_died(self, when: str = "") -> None:
        """The writer is gone: say why in one line (its own error message first, if it sent one)."""
        with contextlib.suppress(EOFError, OSError):
            while self.writer_conn.poll():
                message = self.writer_conn.recv()
                if message[0] == "error":
                    self._on_writer_message(message)
        self.writer.join(5)
        raise RunFailed(f"the writer process died ({_exit_reason(self.writer.exitcode)}){when}; committed shards "
                        "are kept: continue with --resume")

    def _on_writer(self) -> None:
        try:
            message = self.writer_conn.recv()
        except (EOFError, OSError):
            self._writer_died()
        self._on_writer_message(message)

    def _on_writer_message(self, message: tuple) -> None:
        kind = message[0]
        if kind == "received":
            if message[2] >= 0:
                self.free_out.append(message[2])
        elif kind == "written":
            self.written_upto = message[1]
        elif kind == "error":
            _, text, is_os_error = message
            if is_os_error:  # disk full, permission denied, ...: the machine's problem, not a bug
                raise RunFailed(f"cannot write the output: {text}; committed shards are kept: fix it and "
                                "continue with --resume")
            raise RuntimeError("the writer failed:\n" + text)
        elif kind == "finished":
            self.finished = message

    def _send_writer(self, message: tuple) -> None:
        try:
            self.writer_conn.send(message)
        except OSError:
            self._writer_died()

    # ---------------------------------------------------------------- the end
    def _finish(self) -> EngineResult:
        """Stop the workers, then have the writer write the last shard and the manifest."""
        end = time.perf_counter()
        self._stop_workers()
        for w in self.workers:
            account = self.accounts[w.index]
            account.idle_s = max(0.0, (end - w.started_at) - account.busy_s)
        extra = dict(self.manifest_base)
        extra["routing"] = routing_summary(self.router, self.accounts, len(self.routing["seq"]))
        extra["timings"] = {"wall_s": round(end - self.t0, 4)}
        self.finished = None
        self._send_writer(("finish", extra, self.routing))
        while self.finished is None:
            if self.writer_conn.poll(0.5):
                self._on_writer()
            elif not self.writer.is_alive():
                self._writer_died(" while writing the manifest")
        manifest = self.finished[1]
        self.writer.join()
        return EngineResult(manifest, self.accounts, self.faults)

    def _stop_workers(self) -> None:
        """Ask the workers to end once their queue is empty (the normal end of a run)."""
        for w in self.workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        deadline = time.perf_counter() + 5
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.perf_counter()))

    def _shutdown(self) -> None:
        """Every exit path: no process, no segment, no temp file outlives the run.

        On an interruption or error, in-flight results are not wanted: the children are
        killed at once (they hold nothing that needs a clean end; the journal has what counts).
        """
        for child in self.children:
            if child.is_alive():
                child.kill()
        for child in self.children:
            child.join()
        for pool in self.pools:
            pool.close()
        remove_leftovers(self.prefix)
        with contextlib.suppress(OSError):  # e.g. the directory became read-only: the next run removes them
            for tmp in self.out.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _exit_reason(code: int | None) -> str:
    return f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"


def routing_summary(router: Router, accounts: list[WorkerAccount], tasks: int) -> dict:
    """Load balance of the run beside what uniform random routing would give (balls into bins)."""
    loads = [a.bytes for a in accounts]
    mean = sum(loads) / len(loads) if loads else 0.0
    imbalance = max(loads) / mean if mean else 1.0
    cv = (sum((x - mean) ** 2 for x in loads) / len(loads)) ** 0.5 / mean if mean else 0.0
    return {
        "router": router.name,
        "seed": router.seed,
        "decisions": len(router.decisions),
        "tasks": tasks,
        "imbalance": round(imbalance, 4),
        "cv": round(cv, 4),
        "expected_imbalance_uniform": round(expected_imbalance_uniform(tasks, len(accounts)), 4),
        "workers": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(a).items()} for a in accounts
        ],
    }
