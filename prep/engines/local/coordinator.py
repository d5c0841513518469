"""The local engine: a coordinator that routes chunks to worker processes.

Data flows one way: the Source yields chunks, the Router picks a worker, the chunk
goes through the input slot pool, the worker's Stage writes its output to the
output slot pool, and the Writer re-orders and writes shards. The coordinator is the
only process that talks to everyone, over one private pipe per process; it keeps
each chunk's input in its slot until every row is accounted for, so a dead worker's
tasks can be routed again, retried, bisected and, for a poison document, quarantined.

A worker's death is seen at once (its process sentinel); a hung task is killed after
`chunk_timeout_s` per `chunk_bytes` of its text. The writer may die too: the coordinator
keeps what it sent the writer until the shard holding the chunk is committed, so a new writer
resumes from the journal and the uncommitted chunks are sent again (recomputed where their
results went to the dead writer, from the input cut again where it was let go). A dead forkserver is
started again before the next process is. The children die with the coordinator, however
it ends; segment names are unpredictable and recorded in the output directory
(`.prep-shm`), so the next run there removes what a killed one left in /dev/shm.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing as mp
import os
import pickle
import re
import resource
import secrets
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from prep.core.accounting import EngineResult, routing_summary
from prep.core.chunk import Chunk
from prep.core.dedup import dedup_settings
from prep.core.retry import poison_record
from prep.core.taskbook import Outcome, TaskBook
from prep.engines.local.forkserver import TRACKER_WARNING, forkserver_alive, start_forkserver
from prep.engines.local.messages import Failed, Ready, Result, Task, WorkerMessage
from prep.engines.local.transport import Location, SlotPool, release, remove_leftovers
from prep.engines.local.worker import worker_main
from prep.engines.local.writer_process import writer_main
from prep.errors import Interrupted, RunFailed
from prep.io.records import ReadOptions, strict_record_error
from prep.io.trainer_formats import output_spec
from prep.io.verify import chunk_digest
from prep.io.writer import JOURNAL, QUARANTINE, QUARANTINE_PARTIAL, read_journal
from prep.request import Plan

WRITER_DEATHS = 3  # writer deaths in a row with no shard committed in between: something kills it on purpose
SHM_RECORD = ".prep-shm"  # the running (or killed) run's segment prefix, so the next run can remove its leftovers
_PREFIX = re.compile(r"prep_[0-9a-f]{16}_\Z")


def new_shm_prefix() -> str:
    """Unpredictable, so that no other local user can take (or guess and hold) a run's segment names."""
    return f"prep_{secrets.token_hex(8)}_"


def remove_recorded_leftovers(out: Path) -> list[str]:
    """Remove the segments that a killed run into `out` left, as its `.prep-shm` names them, then the record.
    Only a name of prep's own exact form is used: the record cannot point this at anyone else's segments."""
    record = out / SHM_RECORD
    try:
        prefix = record.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return []
    except OSError:  # e.g. a directory of that name: not ours to read
        return []
    if not _PREFIX.match(prefix):  # not a record of ours: left alone (the ownership check names it)
        return []
    removed = remove_leftovers(prefix)
    with contextlib.suppress(OSError):
        record.unlink()
    return removed


def peak_rss_mb() -> float:
    """This process's peak resident memory: the coordinator's stays flat in the input's size (it lets a chunk's
    input go once every result is out)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def writer_threads(workers: int) -> int:
    """Threads that encode the writer's Parquet row groups: a worker tokenizes ~35 MB/s with tokenizers 1.x and
    a thread encodes ~100 MB/s, so one per two workers keeps up, within the CPUs there are."""
    return max(1, min((workers + 1) // 2, len(os.sched_getaffinity(0))))


@dataclass
class _Worker:
    index: int
    process: mp.Process
    conn: object
    started_at: float


@dataclass
class _ChunkState:
    chunk: Chunk
    loc: Location
    slot: int  # the input slot it holds (also when the batch went to a segment of its own)
    open_tasks: int = 0
    again: bool = False  # computed a second time, after a writer died: its progress was counted already
    parsed_in: int = 0  # records its workers' parsing met (a raw chunk), for the progress bar


@dataclass
class _Kept:
    """What a new writer needs of a chunk the dead one had not committed: its input facts, the bad records
    already decided, and which rows' results must be computed again (they went to the dead writer)."""

    chunk: Chunk | None  # None once every row's result went out: the input is cut again if a writer dies
    info: dict
    quarantined: list = field(default_factory=list)  # ("part", ...) messages without results: sent again as-is
    computed: list = field(default_factory=list)  # (start, stop) of the results sent to the writer


class LocalEngine:
    """Run one pipeline over a chunk stream with M worker processes."""

    def __init__(self, plan: Plan, out: Path) -> None:
        self.config, self.tokenizer, self.router, self.out = plan.config, plan.tokenizer, plan.router, out
        self.workers_n = plan.router.workers
        self.start_seq = plan.start_seq
        self.journal_entries = plan.journal_entries
        self.on_progress = plan.on_progress
        self.slow_workers = plan.slow_workers
        self.replay = plan.replay
        self._replay: Iterator[Chunk] | None = None  # the input cut again, for chunks a dead writer took along
        self._replay_next = 0  # the seq it yields next
        self.manifest_base = plan.manifest_base
        self.window = max(4, 4 * self.workers_n)  # chunks in shared memory at once (input and output slots)
        # How far past the first chunk not yet written a chunk may be admitted: what the writer may hold to put its
        # results in order. At the window itself, one late chunk (behind a long queue, on a slowed worker) stopped
        # the intake: with 2 workers, one slowed 3x, the fast one idled 3.0 s of a 5.4 s run (1.0-1.3 s of 3.2-4.1).
        self.ahead = 4 * self.window
        self.prefix: str | None = None
        self._backend_blob: bytes | None = None

    # ----------------------------------------------------------------- set-up
    def _spawn(self, target: Callable, args: tuple, name: str) -> mp.Process:
        """Start a child. SIGINT or SIGTERM arriving meanwhile waits until it is registered: clean-up must know
        every process there is (one it missed would outlive the run)."""
        self._deferring = True
        try:
            for attempt in range(5):
                if not forkserver_alive():  # killed, or died by accident: started again, with SIGINT ignored
                    start_forkserver()
                process = self.ctx.Process(target=target, args=args, name=name, daemon=True)
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=TRACKER_WARNING)
                        process.start()
                    break
                except (OSError, EOFError) as exc:  # the child died while it was sent its arguments, or the
                    if attempt == 4:               # forkserver is dying (not yet reaped, so it looked alive)
                        raise RunFailed(f"cannot start the {name} process: {exc or type(exc).__name__}") from None
                    self._start_failed(name, exc)
                    time.sleep(0.05 * 2**attempt)
            self.children.append(process)
        finally:
            self._deferring = False
        if self._pending_signal is not None:
            raise Interrupted(self._pending_signal)
        return process

    def _start_failed(self, name: str, exc: BaseException) -> None:
        """A start that failed is a death like any other: counted, and said among the faults survived."""
        self.book.faults.append(f"{name} died while starting ({exc or type(exc).__name__}); started again")
        if name.startswith("prep-worker-"):
            self.book.accounts[int(name.rsplit("-", 1)[1])].restarts += 1
        else:
            self.writer_restarts += 1

    def _start_worker(self, index: int) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self._spawn(worker_main, (index, child, self.config.to_dict(), self._backend_for_workers(),
                                            self.in_pool.spec(), self.out_pool.spec(),
                                            self.slow_workers.get(index, 1.0), os.getpid()), f"prep-worker-{index}")
        child.close()
        return _Worker(index, process, parent, time.perf_counter())

    def _backend_for_workers(self) -> bytes | str:
        """The backend's name, or the verified fast backend itself pickled once: as an object, each worker's start
        would hold the coordinator until the worker had rebuilt it (multiprocessing writes the arguments into a
        pipe the child reads while unpickling them: ~0.1 s a worker for GPT-2's tiktoken backend)."""
        if self.tokenizer.instance is None:
            return self.tokenizer.backend
        if self._backend_blob is None:
            self._backend_blob = pickle.dumps(self.tokenizer.instance, protocol=pickle.HIGHEST_PROTOCOL)
        return self._backend_blob

    def run(self, chunks: Iterator[Chunk]) -> EngineResult:
        self.ctx = mp.get_context("forkserver")
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
            self._create_pools()
            start_forkserver()
            return self._run(chunks)
        finally:
            for s in previous:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(s, signal.SIG_IGN)
            try:
                self._shutdown()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    def _create_pools(self) -> None:
        """The two slot pools, under a new unpredictable prefix, recorded first in the output directory (so that a
        kill at any moment leaves a record of what to remove). A name that exists is not ours: another is drawn."""
        sizes = {"in": 2 * self.config.chunk_bytes + 2**18, "out": 6 * self.config.chunk_bytes + 2**20}
        record = self.out / SHM_RECORD
        for _ in range(3):
            prefix = new_shm_prefix()
            try:
                record.write_text(prefix + "\n", encoding="ascii")
            except OSError as exc:
                raise RunFailed(f"cannot write {record}: {exc.strerror or exc}") from None
            try:
                self.in_pool, self.out_pool = (self._create_pool(prefix + kind, size) for kind, size in sizes.items())
                self.prefix = prefix  # ours from now on: removed at the end, whatever else has that prefix
                return
            except FileExistsError:  # someone else's: never to be removed by us, nor by the next run
                for pool in self.pools:
                    pool.close()
                self.pools.clear()
        record.unlink(missing_ok=True)
        raise RunFailed(f"cannot create a shared-memory segment in /dev/shm: each of 3 random names ({prefix}…) "
                        "exists already")

    def _create_pool(self, name: str, slot_size: int) -> SlotPool:
        try:
            pool = SlotPool(name, self.window, slot_size, create=True)
        except FileExistsError:
            raise
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.ENOMEM)
            hint = "; use fewer --workers or a smaller --chunk-bytes" if full else ""
            raise RunFailed(f"cannot reserve {self.window * slot_size / 2**20:.0f} MiB of shared memory in "
                            f"/dev/shm ({exc.strerror or exc}){hint}") from None
        self.pools.append(pool)
        return pool

    def _start_writer(self, start_seq: int, entries: list[dict]) -> None:
        writer_conn, child = self.ctx.Pipe()
        self.writer = self._spawn(writer_main, (child, str(self.out), self.out_pool.spec(), self.config.shard_bytes,
                                                self.config.compression, start_seq, entries, os.getpid(),
                                                output_spec(self.config), dedup_settings(self.config),
                                                writer_threads(self.workers_n)),
                                   "prep-writer")
        child.close()
        self.writer_conn = writer_conn

    def _run(self, chunks: Iterator[Chunk]) -> EngineResult:
        self.kept: dict[int, _Kept] = {}  # chunks not yet committed, by seq
        self.again: deque[tuple[int, list]] = deque()  # (seq, row ranges) to compute again, once a slot is free
        self.writer_deaths = 0  # in a row, with no shard committed in between
        self.writer_restarts = 0
        self.finish_message: tuple | None = None
        self.flush_sent = False
        self.book = TaskBook(self.router, chunk_bytes=self.config.chunk_bytes,
                             chunk_timeout_s=self.config.chunk_timeout_s)  # first: a failed start is counted there
        self._start_writer(self.start_seq, self.journal_entries)
        self.t0 = self.book.t0 = time.perf_counter()
        self.cpu0 = time.process_time()  # the coordinator's CPU from here on is the engine's, not its start's
        self.waiting_s = 0.0  # in wait(), for any message: the run waits for the coordinator when this is ~0
        self.workers = [self._start_worker(j) for j in range(self.workers_n)]

        self.free_in = list(range(self.window))
        self.free_out = list(range(self.window))
        self.chunks: dict[int, _ChunkState] = {}  # chunks in their input slots, by seq
        self.out_slots: dict[int, int] = {}  # task id -> the output slot of a task in a worker's hands
        self.written_upto = self.start_seq
        source_done = False
        pending_chunk: Chunk | None = None

        while True:
            # Feed: first what a dead writer took with it, then new chunks while the window and the slots allow.
            while self.again and self.free_in:
                self._admit_again(*self.again.popleft())
            while not source_done and self.free_in and len(self.chunks) < self.window:
                if pending_chunk is None:
                    pending_chunk = next(chunks, None)
                    if pending_chunk is None:
                        source_done = True
                        break
                chunk = pending_chunk
                if chunk.seq >= self.written_upto + self.ahead:
                    break
                pending_chunk = None
                self._admit(chunk)
            self._dispatch()
            if source_done and not self.chunks and not self.again:
                if not self.kept:  # every chunk is in a committed shard: the workers are no longer needed
                    break
                if not self.flush_sent:  # commit the last shard while workers remain to recompute it if need be
                    self.flush_sent = True
                    self._send_writer(("flush",))
            self._wait_and_handle()

        return self._finish()

    # ------------------------------------------------------------- the chunk flow
    def _admit(self, chunk: Chunk) -> None:
        info = {
            "rows": chunk.units,
            "weight": chunk.text_bytes,  # what shards are cut by: known before any worker parses the chunk
            "text_bytes": 0 if chunk.raw else chunk.text_bytes,  # a raw chunk's arrive with its parts
            "documents_in": chunk.documents_in,
            "quarantine": chunk.quarantine,
            "source": chunk.source,
            "digest": chunk_digest(chunk),
        }
        self.kept[chunk.seq] = _Kept(chunk, info)
        self._send_writer(("chunk", chunk.seq, info))
        if chunk.units == 0:  # only bad records: nothing to compute, the writer has it all
            self.on_progress(chunk.input_bytes, chunk.documents_in)
            return
        slot = self.free_in.pop()
        self.chunks[chunk.seq] = _ChunkState(chunk, self._write_input(slot, chunk), slot)
        self.book.admit(chunk.seq, chunk.units, chunk.text_bytes)

    def _write_input(self, slot: int, chunk: Chunk) -> Location:
        try:
            return self.in_pool.write(slot, chunk.batch)
        except OSError as exc:  # a huge document needs a segment of its own and /dev/shm is full
            raise RunFailed(f"cannot put chunk {chunk.seq} ({chunk.text_bytes / 2**20:.0f} MiB of text, from "
                            f"{chunk.source}) in shared memory: {exc.strerror or exc}") from None

    def _admit_again(self, seq: int, ranges: list[tuple[int, int]]) -> None:
        """Put a chunk whose results died with a writer back in an input slot and compute those rows again."""
        chunk = self.kept[seq].chunk or self._reread(seq)
        slot = self.free_in.pop()
        self.chunks[seq] = _ChunkState(chunk, self._write_input(slot, chunk), slot, again=True)
        self.book.admit(seq, chunk.units, chunk.text_bytes, parts=ranges)

    def _reread(self, seq: int) -> Chunk:
        """A chunk whose input was let go, cut again from the input files (chunks depend on the input bytes only)
        and proved the same by its digest. Holding every uncommitted chunk's input instead held up to a shard of
        it (256 MiB by default) in the coordinator."""
        if self._replay is None or self._replay_next > seq:
            self._replay, self._replay_next = self.replay(seq), seq
        for chunk in self._replay:
            self._replay_next = chunk.seq + 1
            if chunk.seq == seq and chunk_digest(chunk) == self.kept[seq].info["digest"]:
                return chunk
            if chunk.seq >= seq:
                break
        raise RunFailed(f"the input changed while prep ran: chunk {seq} ({self.kept[seq].info['source']}) is not what "
                        "was read before; committed shards are kept: continue with --resume once it stays put")

    def _dispatch(self) -> None:
        """Route what waits to live workers, as far as free output slots allow."""
        if not self.book.ready_tasks or not self.free_out:
            return
        # Every worker held is taken as alive: a death is seen at its sentinel, in the same wait as any message,
        # and the worker replaced at once (tasks sent meanwhile are routed again, uncharged). Asking each process
        # here (is_alive: one poll per worker) cost more than the dispatch itself at 16 workers.
        alive = [True] * len(self.workers)
        for task in self.book.next_dispatch(alive, time.perf_counter(), capacity=len(self.free_out)):
            slot = self.out_slots[task.task_id] = self.free_out.pop()
            state = self.chunks[task.seq]
            message = Task(task.task_id, task.seq, task.start, task.stop, state.loc, slot, state.chunk.raw)
            with contextlib.suppress(OSError):  # dead: its sentinel fires next and the task is re-routed
                self.workers[task.worker].conn.send(message)

    def _wait_and_handle(self) -> None:
        objects = [self.writer_conn, self.writer.sentinel]
        for w in self.workers:
            objects += [w.conn, w.process.sentinel]
        timeout = self._check_timeouts()
        t = time.perf_counter()
        readies = wait(objects, timeout=timeout)
        self.waiting_s += time.perf_counter() - t
        for ready in readies:
            if ready is self.writer_conn:
                self._on_writer()
            elif ready is self.writer.sentinel:
                self._writer_died()
            else:
                for w in list(self.workers):
                    if ready is w.conn and not w.conn.closed:
                        self._drain(w, at_most=1)
                    elif ready is w.process.sentinel:
                        self._on_worker_death(w)

    def _check_timeouts(self) -> float:
        """Kill the workers the task book finds overdue; return how long to wait for the next deadline."""
        now = time.perf_counter()
        for j, _reason in self.book.overdue(now):
            self.workers[j].process.kill()
        return self.book.next_deadline(now, 0.5)

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

    def _on_worker_message(self, w: _Worker, message: WorkerMessage) -> None:
        now = time.perf_counter()
        if isinstance(message, Ready):
            self.book.on_ready(w.index, now)
        elif isinstance(message, Failed):
            outcome = self.book.on_failed(w.index, message.task_id, "exception: " + message.error, now)
            if outcome is not None:  # else stale: the task was routed again meanwhile
                self._carry_out(outcome)
        elif isinstance(message, Result):
            done = self.book.on_done(w.index, message.task_id, message.stats["documents"], message.stats["tokens"],
                                     message.timing, now)
            if done is None:
                return
            task = done.task
            if self.config.strict and message.stats.get("quarantine"):  # a bad record the worker's parse found
                raise strict_record_error(message.stats["quarantine"][0], self.chunks[task.seq].chunk.raw.format)
            self.chunks[task.seq].parsed_in += message.stats.get("in_documents", 0)
            slot = self.out_slots.pop(task.task_id)
            if message.location.segment is not None:  # the output went to a segment of its own: slot unused
                self.free_out.append(slot)
            self.kept[task.seq].computed.append((task.start, task.stop))
            self._send_writer(("part", task.seq, task.start, task.stop, message.location, message.stats))
            if done.closed:
                self._chunk_closed(task.seq)
        else:
            raise RuntimeError(f"unexpected message from worker {w.index}: {message!r}")

    def _carry_out(self, outcome: Outcome) -> None:
        """Free the output slots of tasks taken off a worker, write the quarantined documents, close chunks."""
        for task in outcome.released:
            slot = self.out_slots.pop(task.task_id, None)
            if slot is not None:
                self.free_out.append(slot)
        for seq, row_index, reason in outcome.quarantine:
            state = self.chunks[seq]
            chunk = state.chunk
            stats = poison_record(chunk.batch, chunk.raw, chunk.origins, row_index, reason,
                                  ReadOptions.of(self.config))
            state.parsed_in += stats["in_documents"]
            message = ("part", seq, row_index, row_index + 1, None, stats)
            self.kept[seq].quarantined.append(message)
            self._send_writer(message)
        for seq in outcome.closed:
            self._chunk_closed(seq)

    def _chunk_closed(self, seq: int) -> None:
        """Every row of the chunk is accounted for: its input slot is free. Not so when a writer that died while
        it was being told of the last part had its rows computed again meanwhile (the book reopened it)."""
        if self.book.is_open(seq):
            return
        state = self.chunks.pop(seq)
        self.book.forget(seq)
        self.free_in.append(state.slot)
        release(state.loc)
        if self.replay is not None and seq in self.kept:  # every result went out: a writer's death re-reads it
            self.kept[seq].chunk = None
        if not state.again:
            self.on_progress(state.chunk.input_bytes, state.chunk.documents_in + state.parsed_in)

    def _on_worker_death(self, w: _Worker) -> None:
        """Re-route a dead worker's tasks: the one it was computing is charged a fault, the rest are not."""
        self._drain(w)  # results it sent before it died still count
        w.conn.close()
        outcome = self.book.on_worker_lost(w.index, "worker " + _exit_reason(w.process.exitcode), time.perf_counter())
        self.workers[w.index] = self._start_worker(w.index)
        self._carry_out(outcome)

    def _writer_died(self) -> None:
        """The writer is gone. One that said why (disk full, a bug) ends the run in one line; one that was killed
        is replaced by a writer that starts from the journal, and is sent again what was not committed."""
        with contextlib.suppress(EOFError, OSError):
            while self.writer_conn.poll():  # what it said before it died still counts (its error first of all)
                self._on_writer_message(self.writer_conn.recv())
        while True:
            self.writer.join(5)
            reason = "writer " + _exit_reason(self.writer.exitcode)
            self.writer_conn.close()
            self.writer_deaths += 1
            if self.writer_deaths >= WRITER_DEATHS:
                raise RunFailed(f"the writer keeps dying ({self.writer_deaths} times with no shard committed; last:"
                                f" {reason}); committed shards are kept: continue with --resume")
            try:
                self._restart_writer(reason)
                return
            except (EOFError, OSError):  # it died again while being told what to write
                continue

    def _restart_writer(self, reason: str) -> None:
        """Start a writer from the journal's committed state; send it the uncommitted chunks again. Results it
        received are computed again (from the kept input); the bad records decided are sent as they were."""
        entries = _repair_after_writer(self.out)
        committed_upto = entries[-1]["last_seq"] if entries else self.start_seq - 1
        for seq in [s for s in self.kept if s <= committed_upto]:
            del self.kept[seq]
        next_seq = committed_upto + 1
        self._start_writer(next_seq, entries)
        self.written_upto = next_seq
        # Output slots the dead writer was to read are free; those of tasks in the workers' hands are not.
        busy = set(self.out_slots.values())
        self.free_out = [slot for slot in range(self.window) if slot not in busy]
        self.again = deque((seq, ranges) for seq, ranges in self.again if seq in self.kept)
        redo = reread = 0
        for seq in sorted(self.kept):
            kept = self.kept.get(seq)
            if kept is None:  # committed meanwhile (a shard of bad records only)
                continue
            self._resend(("chunk", seq, kept.info))
            for message in kept.quarantined:
                self._resend(message)
            ranges, kept.computed = kept.computed, []
            redo += len(ranges)
            if not ranges:
                continue
            if seq in self.chunks:  # still in its input slot: compute those rows again from there
                for start, stop in ranges:
                    self.book.reopen(seq, start, stop)
            else:
                self.again.append((seq, ranges))
                reread += kept.chunk is None
        self.flush_sent = False
        self.writer_restarts += 1
        self.book.faults.append(f"{reason}: a new writer continues after {len(entries)} committed shard(s); "
                           f"{len(self.kept)} chunk(s) sent again, {redo} part(s) computed again, {reread} chunk(s) "
                           "read again from the input")
        if self.finish_message is not None:
            self._resend(self.finish_message)

    def _resend(self, message: tuple) -> None:
        """Send to a new writer, reading its replies on the way (else both could wait on a full pipe)."""
        while self.writer_conn.poll():
            self._on_writer_message(self.writer_conn.recv())
        self.writer_conn.send(message)

    def _on_writer(self) -> None:
        try:
            message = self.writer_conn.recv()
        except (EOFError, OSError):
            self._writer_died()
            return
        self._on_writer_message(message)

    def _on_writer_message(self, message: tuple) -> None:
        kind = message[0]
        if kind == "received":
            if message[2] >= 0:
                self.free_out.append(message[2])
        elif kind == "written":
            self.written_upto = message[1]
        elif kind == "shard":  # committed: its chunks are no longer needed to recover from a writer's death
            for seq in [s for s in self.kept if s <= message[3]]:
                del self.kept[seq]
            self.writer_deaths = 0
        elif kind == "error":
            _, text, is_os_error = message
            if is_os_error:  # disk full, permission denied, ...: the machine's problem, not a bug
                raise RunFailed(f"cannot write the output: {text}; committed shards are kept: fix it and "
                                "continue with --resume")
            raise RuntimeError("the writer failed:\n" + text)
        elif kind == "finished":
            self.finished = message

    def _send_writer(self, message: tuple) -> None:
        """Send, or, if the writer is dead, replace it (which sends again all that was not committed, this
        message included, since the caller recorded it first)."""
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
            account = self.book.accounts[w.index]
            account.idle_s = max(0.0, (end - w.started_at) - account.busy_s)
        extra = dict(self.manifest_base)
        extra["routing"] = routing_summary(self.router, self.book.accounts, len(self.book.routing["seq"]))
        extra["routing"]["writer_restarts"] = self.writer_restarts
        extra["timings"] = {"wall_s": round(end - self.t0, 4),
                            "coordinator_cpu_s": round(time.process_time() - self.cpu0, 4),
                            "coordinator_waiting_s": round(self.waiting_s, 4),
                            "coordinator_peak_rss_mb": round(peak_rss_mb(), 1)}
        self.finished = None
        self.finish_message = ("finish", extra, self.book.routing)
        self._send_writer(self.finish_message)
        while self.finished is None:
            if self.writer_conn.poll(0.5):
                self._on_writer()
            elif not self.writer.is_alive():
                self._writer_died()
        manifest = self.finished[1]
        self.writer.join()
        return EngineResult(manifest, self.book.accounts, self.book.faults)

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
        if self.prefix is not None:
            remove_leftovers(self.prefix)
        with contextlib.suppress(OSError):  # e.g. the directory became read-only: the next run removes them
            for tmp in self.out.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            (self.out / SHM_RECORD).unlink(missing_ok=True)


def _repair_after_writer(out: Path) -> list[dict]:
    """Make the output directory what a writer starting from the journal expects, after its predecessor died
    anywhere: no torn journal line (a new line would follow it), the quarantine back under its partial name
    (the dead one may have renamed it on its way to the manifest). Returns the committed entries."""
    path = out / JOURNAL
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "rb+") as f:
            f.truncate(data.rfind(b"\n") + 1)
            os.fsync(f.fileno())
    final, partial = out / QUARANTINE, out / QUARANTINE_PARTIAL
    if final.exists() and not partial.exists():
        os.replace(final, partial)
    return read_journal(out)[1]


def _exit_reason(code: int | None) -> str:
    return f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
