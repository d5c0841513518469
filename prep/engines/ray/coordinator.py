"""The Ray engine: the same pipeline (sources, routers, stage, writer) on a Ray cluster.

The driver plans and routes; it never holds the corpus. Reader tasks (streaming generators) read one split
each on the cluster and put every chunk in the object store; the driver gets only each chunk's small facts
(rows, text bytes, bad records) and numbers chunks in file order, so `seq` is gapless and the same as the
local engine's. Worker actors each hold a Stage; the project's router picks the actor from the outstanding
work per actor, and a result stays in the object store until the writer actor that owns its shard
(shard k -> writer k mod W) fetches it. Shard boundaries follow the chunks' text bytes exactly as in
`ShardWriter`, so the driver knows each chunk's shard when it admits it; a writer writes a whole shard with
`ShardWriter` into a node-local staging directory and publishes it atomically into any pyarrow filesystem.
The driver appends each committed shard to the journal, in shard order, and writes the manifest last.

Faults: a worker actor that dies is restarted by Ray (`max_restarts`) or replaced by us; its queued tasks
are routed again and the one it was running is charged an attempt (retry, bisect, quarantine, as in the
local engine). A lost input chunk is rebuilt by Ray's lineage (the reader runs again); a lost result is
computed again; a writer that dies is sent its shard again (publishing is idempotent).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prep.core.accounting import EngineResult, routing_summary
from prep.core.chunk import Origins, RawSpec
from prep.core.dedup import Deduper, dedup_settings
from prep.core.retry import poison_record
from prep.core.taskbook import Outcome, TaskBook
from prep.engines.ray.actors import FileActor, StageActor, WriterActor
from prep.engines.ray.band_index import band_actors, sharded_deduper
from prep.engines.ray.files import POLL_S, WAIT_S, Split
from prep.engines.ray.output import Output
from prep.errors import RunFailed, UserError
from prep.io.records import ReadOptions, strict_record_error
from prep.io.trainer_formats import output_spec
from prep.io.verify import check_committed_chunk, committed_digests
from prep.request import Plan


@dataclass(eq=False)
class _Actor:
    index: int
    handle: Any
    ping: Any = None  # ref of the pending ready() call while (re)starting
    ping_at: float | None = None  # when to ask again (it was unreachable: Ray may not know yet it died)
    alive: bool = True  # calls wait in the actor's queue while it starts, as tasks wait in a worker's pipe
    started: bool = False  # has ever been ready
    started_at: float = 0.0


@dataclass
class _ChunkState:
    seq: int
    shard: int
    info: dict
    source: str
    input_bytes: int
    batch: Any
    origins: Origins | None  # each row's file and position, for a poison document's quarantine record
    raw: RawSpec | None  # a raw chunk: its units (records, rows, files) are read by the actors
    parts: dict = field(default_factory=dict)  # start -> (stop, output ref | None, stats)
    reported: bool = False  # progress counted (a result computed again is not counted twice)
    parsed_in: int = 0  # records the actors' parsing met (a raw chunk), for the progress bar


@dataclass
class _Shard:
    index: int
    first_seq: int
    weight: int = 0  # its chunks' weights: it ends once they reach shard_bytes, as ShardWriter's shards do
    last_seq: int | None = None  # set once the shard takes no more chunks
    seqs: list = field(default_factory=list)
    open_chunks: int = 0
    writing: Any = None  # ref of the write_shard call in flight
    attempts: int = 0
    file_index: int | None = None  # its file's number, gapless: given once the shards before it have theirs


class Feed:
    """Chunks in seq order from reader tasks that run ahead on the cluster."""

    def __init__(self, reader: Any, splits: list[Split], options: dict, ahead: int) -> None:
        self.reader, self.options, self.ahead = reader, options, ahead
        self.waiting = deque(splits)
        self.running: deque = deque()
        self.seq = 0
        self.held: tuple | None = None
        self._top_up()

    def _top_up(self) -> None:
        while self.waiting and len(self.running) < self.ahead:
            self.running.append(self.reader.remote(self.waiting.popleft(), self.options))

    @property
    def done(self) -> bool:
        return self.held is None and not self.running

    def waitable(self) -> Any:
        return self.running[0] if self.held is None and self.running else None

    def next(self, timeout: float | None = 0.0) -> tuple[int, Any, dict] | None:
        """(seq, batch ref, facts) of the next chunk, or None when it is not ready (or the input ended)."""
        import ray

        if self.held is not None:
            item, self.held = self.held, None
            return item
        while self.running:
            gen = self.running[0]
            if not self.ready(gen) and not (timeout != 0 and ray.wait([gen], timeout=timeout, fetch_local=False)[0]):
                return None
            try:
                batch = next(gen)
            except StopIteration:
                self.running.popleft()
                self._top_up()
                continue
            try:
                facts = next(gen)
            except StopIteration:
                ray.get(batch)  # the reader failed: its error is in this ref
                raise RuntimeError("a reader ended mid-chunk") from None
            meta = _get_reader(facts)
            self.seq += 1
            return self.seq - 1, batch, meta
        return None

    @staticmethod
    def ready(gen: Any) -> bool:
        """next(gen) returns at once (a chunk, an error, or the end); cheaper than ray.wait."""
        return gen.next_ready() or gen.is_finished()

    def peek(self) -> tuple[int, Any, dict] | None:
        """The first chunk (blocking), kept for the next `next()`."""
        self.held = self.next(timeout=None)
        return self.held

    def cancel(self) -> None:
        import ray

        for gen in self.running:
            with contextlib.suppress(Exception):  # best effort on the way out
                ray.cancel(gen, force=True)
        self.running.clear()


def _get_reader(ref: Any) -> Any:
    """ray.get for reader results: a user error in a reader (missing field, strict mode) stays one line."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise UserError(str(exc.cause)) from None
        raise


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__



def _for_writer(stats: dict, decision: dict | None) -> dict:
    """A part's stats as its writer needs them: the driver's dedup decision instead of the keys and ids."""
    stats = {k: v for k, v in stats.items() if not k.startswith("dedup_")}
    if decision is not None:
        stats["dedup"] = decision
    return stats

class RayEngine:
    """Run one pipeline over planned splits with M worker actors and W writer actors."""

    def __init__(self, plan: Plan, output: Output, feed: Feed, writers: int | None = None) -> None:
        self.config, self.tokenizer, self.router = plan.config, plan.tokenizer, plan.router
        self.output, self.feed = output, feed
        self.workers_n = plan.router.workers
        self.writers_n = writers or max(2, math.ceil(self.workers_n / 16))
        self.window = max(4, 4 * self.workers_n)
        self.max_open_shards = 2 * self.writers_n
        self.start_seq = plan.start_seq
        self.entries = list(plan.journal_entries)
        self.journalled = committed_digests(self.entries)
        self.on_progress = plan.on_progress
        self.slow_workers = plan.slow_workers
        self.manifest_base = plan.manifest_base
        self.timings: dict[str, float] = {}
        # dedup: decided here, in seq order, from the keys and ids the stage actors return (prep.core.dedup),
        # the band index on band-index actors (prep.engines.ray.band_index); made once Ray is up
        self.dedup = dedup_settings(self.config)
        self.deduper: Deduper | None = None
        self.decisions: dict[int, dict[int, dict]] = {}  # seq -> start -> decision, until the shard is committed
        self.dedup_records: dict[int, list[dict]] = {}  # shard index -> its index records, until journalled

    # ------------------------------------------------------------------------------------------ set-up
    def _new_actor(self, index: int) -> _Actor:
        config = self.config.to_dict()
        cpus = 1 if self.workers_n <= self.cluster_cpus else 0  # oversubscribed: no reservation, all start
        handle = self.stage_cls.options(
            num_cpus=cpus, max_restarts=3, max_task_retries=0, scheduling_strategy="SPREAD",
        ).remote(config, self.tokenizer.backend, self.files_name, self.slow_workers.get(index, 1.0))
        actor = _Actor(index, handle, started_at=time.perf_counter())
        self._ping(actor)
        return actor

    def _new_writer(self, index: int) -> _Actor:
        handle = self.ray.remote(WriterActor).options(
            num_cpus=0, max_restarts=-1, max_task_retries=0, scheduling_strategy="SPREAD",
        ).remote(self.output.where, self.config.shard_bytes, self.config.compression, output_spec(self.config))
        writer = _Actor(index, handle, started_at=time.perf_counter())
        self._ping(writer)
        return writer

    def _ping(self, actor: _Actor) -> None:
        """Ask a (re)starting actor to answer once it is up."""
        actor.ping, actor.ping_at = self._watch(actor.handle.ready.remote()), None
        self.pinging[actor.ping] = actor

    def _watch(self, ref: Any) -> Any:
        """Have `ref` put on the done queue when it completes: O(1) per event, where ray.wait over every ref
        in flight would cost O(refs) each time (~3 ms at 6,400 refs, the window of 1,600 workers)."""
        ref.future().add_done_callback(lambda _future: self.done.put(ref))
        return ref

    def run(self) -> EngineResult:
        import ray

        self.ray = ray
        self.cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.stage_cls = ray.remote(StageActor)
        self.files_name = f"prep-files-{os.getpid()}-{time.time_ns()}"  # by name: a handle argument counts too
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.files = ray.remote(FileActor).options(num_cpus=0, name=self.files_name, max_restarts=-1,
                                                   scheduling_strategy=here).remote(self.config.tokenizer)
        self.actors: list[_Actor] = []
        self.writers: list[_Actor] = []
        try:
            if self.dedup is not None:
                self.deduper = sharded_deduper(ray, self.dedup, self.output.dir, self.entries[-1].get(
                    "dedup_bytes", 0) if self.entries else 0, band_actors(self.workers_n))
            return self._run()
        finally:
            if self.deduper is not None:
                self.deduper.close()
            self.feed.cancel()
            for handle in [a.handle for a in self.actors + self.writers] + [self.files]:
                ray.kill(handle)

    def _run(self) -> EngineResult:
        self.t0 = time.perf_counter()
        cpu0 = time.process_time()
        self.done: queue.SimpleQueue = queue.SimpleQueue()  # refs that completed, from Ray's callback thread
        self.pinging: dict = {}  # ready() ref -> actor
        self.writing: dict = {}  # write_shard ref -> shard index
        self.nodes: dict[str, list] = {"workers": [None] * self.workers_n, "writers": [None] * self.writers_n}
        self.book = TaskBook(self.router, chunk_bytes=self.config.chunk_bytes,
                             chunk_timeout_s=self.config.chunk_timeout_s, t0=self.t0)
        self.writers = [self._new_writer(w) for w in range(self.writers_n)]
        self.actors = [self._new_actor(j) for j in range(self.workers_n)]
        self.refs: dict[int, tuple] = {}  # task id -> (result ref, output ref) of a task sent to an actor
        self.by_result: dict = {}  # result ref -> task id
        self.chunks: dict[int, _ChunkState] = {}
        self.shards: dict[int, _Shard] = {}
        self.filling: _Shard | None = None
        self.next_shard = len(self.entries)
        self.next_file = sum(1 for e in self.entries if e.get("files") or e["file"])
        self.committed: dict[int, dict] = {}
        self.computing = 0  # admitted chunks with rows still to compute
        self.writer_deaths = 0
        self.next_check = 0.0
        source_done = False

        while True:
            while not source_done and self._can_admit():
                item = self.feed.next()
                if item is None:
                    source_done = self.feed.done
                    break
                self._admit(*item)
            if source_done and self.filling is not None:
                self.filling.last_seq = self.filling.seqs[-1]
                self.filling = None
            self._dispatch()
            self._seal()
            if source_done and not self.shards:
                break
            self._wait_and_handle(feed=not source_done and self._can_admit())

        self.timings["driver_cpu_s"] = time.process_time() - cpu0
        return self._finish()

    # -------------------------------------------------------------------------------------- the flow
    def _can_admit(self) -> bool:
        """Bounded memory: chunks in computation, and shards held until written."""
        return self.computing < self.window and (self.filling is not None
                                                 or len(self.shards) < self.max_open_shards)

    def _admit(self, seq: int, batch: Any, meta: dict) -> None:
        if seq < self.start_seq:  # committed by an earlier run (--resume): prove it is the same
            check_committed_chunk(self.journalled, seq, meta["source"], meta["digest"])
            self.on_progress(meta["input_bytes"], 0)
            return
        info = {k: meta[k] for k in ("rows", "weight", "text_bytes", "documents_in", "quarantine", "source",
                                     "digest")}
        shard = self.filling
        if shard is None:
            shard = self.filling = self.shards[self.next_shard] = _Shard(self.next_shard, seq)
            self.next_shard += 1
        shard.seqs.append(seq)
        shard.weight += info["weight"]
        if shard.weight >= self.config.shard_bytes:  # the rule ShardWriter commits by
            shard.last_seq, self.filling = seq, None
        state = _ChunkState(seq, shard.index, info, meta["source"], meta["input_bytes"], batch, meta["origins"],
                            meta["raw"])
        self.chunks[seq] = state
        if info["rows"] == 0:  # only bad records: nothing to compute
            state.reported = True
            self.on_progress(state.input_bytes, info["documents_in"])
            return
        shard.open_chunks += 1
        self.computing += 1
        self.book.admit(seq, info["rows"], info["weight"])

    def _dispatch(self) -> None:
        now = time.perf_counter()
        for task in self.book.next_dispatch([a.alive for a in self.actors], now):
            state = self.chunks[task.seq]
            result, output = self.actors[task.worker].handle.process.options(num_returns=2).remote(
                state.batch, task.start, task.stop, state.raw)
            self.refs[task.task_id] = (result, output)
            self.by_result[self._watch(result)] = task.task_id

    def _seal(self) -> None:
        """Send every shard whose chunks are all computed to the writer that owns it.

        File numbers are gapless (a shard without rows has no file), so a shard is numbered only once every
        shard before it is: then its row count, and so whether it has a file, is known."""
        for shard in sorted(self.shards.values(), key=lambda s: s.index):
            if shard.file_index is None:
                if shard.last_seq is None or shard.open_chunks:
                    break
                rows = sum(stats["documents"] for seq in shard.seqs for _, _, stats in self.chunks[seq].parts.values())
                rows -= self._dedup(shard)
                shard.file_index = self.next_file
                self.next_file += 1 if rows else 0
            writer = self.writers[shard.index % self.writers_n]
            if shard.open_chunks or shard.writing is not None or not writer.alive:
                continue
            chunks = []
            for seq in shard.seqs:
                state = self.chunks[seq]
                decisions = self.decisions.get(seq, {})
                parts = [(start, stop, None if ref is None else [ref], _for_writer(stats, decisions.get(start)))
                         for start, (stop, ref, stats) in sorted(state.parts.items())]
                chunks.append((seq, state.info, parts))
            shard.writing = self._watch(writer.handle.write_shard.remote(shard.file_index, shard.first_seq, chunks))
            self.writing[shard.writing] = shard.index

    def _dedup(self, shard: _Shard) -> int:
        """Decide the duplicates of a shard whose chunks are all computed, every shard before it decided: so in
        seq order, as the local writer does. The decisions are kept until the shard is committed (a result
        computed again gets the same one); returns the documents removed."""
        if self.deduper is None:
            return 0
        removed = 0
        for seq in shard.seqs:
            for start, (_, _, stats) in sorted(self.chunks[seq].parts.items()):
                if stats["documents"]:
                    decision = self.deduper.decide(stats["dedup_ids"], stats)
                    self.decisions.setdefault(seq, {})[start] = decision
                    removed += len(decision["drop"])
        self.dedup_records[shard.index] = self.deduper.take_records()
        return removed

    def _wait_and_handle(self, feed: bool) -> None:
        """Handle what completed; block until something does (or the next chunk is read, when one may be
        admitted: the reader is then what everyone waits for, and it is polled)."""
        timeout = self._check_timeouts()
        gen = self.feed.waitable() if feed else None
        if gen is not None:
            timeout = 0.0 if self.feed.ready(gen) else POLL_S
        try:
            ref = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
        except queue.Empty:
            return
        while True:
            if ref in self.pinging:
                self._on_ping(self.pinging.pop(ref), ref)
            elif ref in self.by_result:
                self._on_result(self.by_result[ref], ref)
            elif ref in self.writing:
                self._on_written(self.shards[self.writing.pop(ref)], ref)
            # anything else was superseded (its task routed again)
            try:
                ref = self.done.get_nowait()
            except queue.Empty:
                return

    def _check_timeouts(self) -> float:
        """Kill an actor whose current task ran past the chunk timeout; a run with no live worker fails.
        At most every WAIT_S: it looks at every actor."""
        now = time.perf_counter()
        if now < self.next_check:
            return WAIT_S
        self.next_check = now + WAIT_S
        for j, _reason in self.book.overdue(now):  # a restarted actor is reported lost, then answers its ping
            self.ray.kill(self.actors[j].handle, no_restart=False)
        for a in self.actors + self.writers:
            if a.ping_at is not None and now >= a.ping_at:
                self._ping(a)
        return WAIT_S

    # ------------------------------------------------------------------------------------- results
    def _on_ping(self, actor: _Actor, ref: Any) -> None:
        """A (re)started actor answered, or it is unreachable for now (ask again), or gone (replace it)."""
        ray = self.ray
        pool, new = (self.actors, self._new_actor) if actor in self.actors else (self.writers, self._new_writer)
        if pool[actor.index] is not actor or actor.ping is not ref:
            return  # replaced, or asked again since
        actor.ping = None
        try:
            node = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            actor.ping_at = time.perf_counter() + 1.0
            return
        except ray.exceptions.RayActorError as exc:
            if pool is self.actors:  # its queue goes elsewhere; dying at start again and again ends the run
                self._carry_out(self.book.on_worker_lost(actor.index, first_line(exc), time.perf_counter()))
            ray.kill(actor.handle)
            pool[actor.index] = new(actor.index)
            return
        actor.alive = actor.started = True
        self.nodes["workers" if pool is self.actors else "writers"][actor.index] = node
        if pool is self.actors:
            self.book.on_ready(actor.index, time.perf_counter())
            self.timings.setdefault("first_worker_ready_s", time.perf_counter() - self.t0)
            if all(a.started for a in self.actors):
                self.timings.setdefault("all_workers_ready_s", time.perf_counter() - self.t0)

    def _on_result(self, task_id: int, ref: Any) -> None:
        ray = self.ray
        task = self.book.tasks[task_id]
        actor = self.actors[task.worker]
        try:
            stats, timing = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._on_actor_death(actor, f"worker lost ({type(exc).__name__})")
            return
        except ray.exceptions.ObjectLostError as exc:
            raise RunFailed(f"chunk {task.seq}: its input was lost and could not be read again "
                            f"({first_line(exc)})") from None
        except ray.exceptions.RayTaskError as exc:
            outcome = self.book.on_failed(task.worker, task_id, "exception: " + first_line(exc), time.perf_counter())
            if outcome is not None:
                self._carry_out(outcome)
            return
        done = self.book.on_done(task.worker, task_id, stats["documents"], stats["tokens"], timing,
                                 time.perf_counter())
        if done is None:  # stale: routed again meanwhile
            return
        if self.config.strict and stats.get("quarantine"):  # a bad record the actor's parse found
            raise strict_record_error(stats["quarantine"][0], self.chunks[task.seq].raw.format)
        self.chunks[task.seq].parsed_in += stats.get("in_documents", 0)
        result, output = self.refs.pop(task_id)
        del self.by_result[result]
        self.chunks[task.seq].parts[task.start] = (task.stop, output, stats)
        if done.closed:
            self._chunk_closed(task.seq)

    def _carry_out(self, outcome: Outcome) -> None:
        """Forget the refs of tasks taken off an actor, record the quarantined documents, close chunks."""
        for task in outcome.released:
            result, _ = self.refs.pop(task.task_id, (None, None))
            self.by_result.pop(result, None)
        for seq, row_index, reason in outcome.quarantine:
            state = self.chunks[seq]
            stats = poison_record(self.ray.get(state.batch), state.raw, state.origins, row_index, reason,
                                  ReadOptions.of(self.config))
            state.parsed_in += stats["in_documents"]
            state.parts[row_index] = (row_index + 1, None, stats)
        for seq in outcome.closed:
            self._chunk_closed(seq)

    def _chunk_closed(self, seq: int) -> None:
        """Every row of the chunk is computed (or quarantined): its shard may be sealed."""
        state = self.chunks[seq]
        self.computing -= 1
        self.shards[state.shard].open_chunks -= 1
        if not state.reported:
            state.reported = True
            self.on_progress(state.input_bytes, state.info["documents_in"] + state.parsed_in)

    def _on_actor_death(self, actor: _Actor, reason: str) -> None:
        """Its queued tasks go to other actors; the one it was running is charged an attempt."""
        actor.alive = False
        self._carry_out(self.book.on_worker_lost(actor.index, reason, time.perf_counter()))
        self._ping(actor)  # answers once Ray has restarted it

    def _on_written(self, shard: _Shard, ref: Any) -> None:
        ray = self.ray
        shard.writing = None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # sent again once Ray has restarted the writer
            writer = self.writers[shard.index % self.writers_n]
            self.book.faults.append(f"shard {shard.index}: writer {writer.index} lost ({type(exc).__name__}); "
                               "written again")
            if writer.alive:
                writer.alive = False
                self.writer_deaths += 1
                if self.writer_deaths > 20 + 3 * self.next_shard:
                    raise RunFailed(f"writers keep dying ({self.writer_deaths} times)") from None
                self._ping(writer)
            return
        except ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"the writer failed on shard {shard.index}:\n{exc}") from None
        if "lost" in result:  # results whose node died before the writer fetched them: compute again
            for seq, start in result["lost"]:
                state = self.chunks[seq]
                stop, _, _ = state.parts.pop(start)
                if not self.book.is_open(seq):
                    self.computing += 1
                    shard.open_chunks += 1
                self.book.faults.append(f"chunk {seq} rows {start}-{stop}: result lost with its node; computed again")
                self.book.reopen(seq, start, stop)
            return
        self.committed[shard.index] = result
        for seq in shard.seqs:
            del self.chunks[seq]
            self.decisions.pop(seq, None)
            self.book.forget(seq)
        del self.shards[shard.index]
        while (n := len(self.entries)) in self.committed:  # the journal stays a prefix of the shards
            done = self.committed.pop(n)
            last = self.entries[-1] if self.entries else {}
            self.output.append(done["entry"], done["quarantine"], last.get("quarantine_bytes", 0),
                               done.get("filtered", b""), last.get("filtered_bytes", 0),
                               self.dedup_records.pop(n, None), last.get("dedup_bytes", 0))
            self.entries.append(done["entry"])

    # ------------------------------------------------------------------------------------------ the end
    def _finish(self) -> EngineResult:
        end = time.perf_counter()
        for a in self.actors:
            account = self.book.accounts[a.index]
            account.idle_s = max(0.0, (end - a.started_at) - account.busy_s)
        extra = dict(self.manifest_base)
        extra["routing"] = routing_summary(self.router, self.book.accounts, len(self.book.routing["seq"]))
        extra["timings"] = {"wall_s": round(end - self.t0, 4)}
        engine = dict(extra.get("engine", {}))
        engine.update({"writers": self.writers_n, "readers_ahead": self.feed.ahead,
                       "worker_nodes": self.nodes["workers"], "writer_nodes": self.nodes["writers"]})
        engine.update({k: round(v, 4) for k, v in self.timings.items()})
        extra["engine"] = engine
        manifest = self.output.finish(self.config, self.entries, extra, self.book.routing, self.deduper)
        return EngineResult(manifest, self.book.accounts, self.book.faults)
