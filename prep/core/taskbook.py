"""The task book: the coordinator's algorithm, engine-neutral.

It takes events (a chunk admitted, a worker ready, a result, a failure, a worker lost, the clock) and
returns decisions (which task goes to which worker, what to quarantine, which chunk is complete, which
worker to kill). It knows nothing of processes, pipes, actors, refs or shared memory: the local and the
Ray executor feed it the same events, so the retry policy, the give-up rules, the timeouts and the
accounting exist once, and a test can replay an event sequence in microseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from prep.core.accounting import WorkerAccount
from prep.core.retry import attempts_allowed, halves
from prep.core.router import Router
from prep.errors import RunFailed

GIVE_UP_QUARANTINED = 10  # documents quarantined by faults, with none written yet: the stage is broken
ROUTING_COLUMNS = ("seq", "start", "stop", "attempt", "worker", "bytes", "queued_at", "started_at", "finished_at")


@dataclass
class BookTask:
    """Rows [start, stop) of chunk `seq`, and how its tries went."""

    task_id: int
    seq: int
    start: int
    stop: int
    nbytes: int  # its share of the chunk's text: what routers balance and what timeouts scale by
    max_attempts: int
    attempts: int = 0
    worker: int = -1
    queued_at: float = 0.0


@dataclass
class _Chunk:
    seq: int
    rows: int
    text_bytes: int
    open_tasks: int = 0


@dataclass
class _WorkerState:
    queue: deque = field(default_factory=deque)  # task ids, in the order sent
    head_since: float = 0.0  # when the task at the head of the queue started (as far as we know)
    ready: bool = False  # has said it is up since it was (re)started
    kill_reason: str | None = None


@dataclass
class Outcome:
    """What an event decided, for the executor to carry out.

    released: tasks taken off a worker (their per-task resources, an output slot or a result ref, can go);
    quarantine: (seq, row, reason) of single documents that failed every try;
    closed: chunks whose every row is now accounted for."""

    released: list[BookTask] = field(default_factory=list)
    quarantine: list[tuple[int, int, str]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


@dataclass
class Done:
    """A result accepted: its task, the routing row written for it, and whether its chunk is complete."""

    task: BookTask
    closed: bool


class TaskBook:
    """Admit chunks, route their tasks, and settle every result, failure and loss."""

    def __init__(self, router: Router, *, chunk_bytes: int, chunk_timeout_s: float, t0: float = 0.0) -> None:
        self.router = router
        self.workers_n = router.workers
        self.chunk_bytes, self.chunk_timeout_s, self.t0 = chunk_bytes, chunk_timeout_s, t0
        self.chunks: dict[int, _Chunk] = {}
        self.tasks: dict[int, BookTask] = {}
        self.ready_tasks: deque[int] = deque()  # waiting for a live worker (or the executor's capacity)
        self.workers = [_WorkerState() for _ in range(self.workers_n)]
        self.outstanding = [0] * self.workers_n  # bytes queued or in progress per worker
        self.accounts = [WorkerAccount(j) for j in range(self.workers_n)]
        self.routing: dict[str, list] = {k: [] for k in ROUTING_COLUMNS}
        self.faults: list[str] = []
        self.next_task_id = 0
        self.tasks_done = 0
        self.quarantined = 0
        self.deaths = 0
        self.startup_failures = 0
        self.no_worker_since: float | None = None

    # ------------------------------------------------------------------------------------ chunks
    def admit(self, seq: int, rows: int, text_bytes: int, parts: Sequence[tuple[int, int]] | None = None) -> None:
        """A chunk with rows to compute: one task for all of it, or one per part given (rows to compute again
        after their results were lost)."""
        self.chunks[seq] = _Chunk(seq, rows, text_bytes)
        for start, stop in parts or [(0, rows)]:
            self._new_task(seq, start, stop, attempts_allowed(start, stop, whole_chunk=True))

    def reopen(self, seq: int, start: int, stop: int) -> None:
        """Rows of a chunk the book still holds must be computed again (their result was lost: with a node,
        or with a writer that died before committing it)."""
        self._new_task(seq, start, stop, attempts_allowed(start, stop, whole_chunk=True))

    def forget(self, seq: int) -> None:
        """The executor needs the chunk no more (written): no task can reopen it. A chunk that had no rows to
        compute was never admitted."""
        self.chunks.pop(seq, None)

    def is_open(self, seq: int) -> bool:
        return self.chunks[seq].open_tasks > 0

    def _new_task(self, seq: int, start: int, stop: int, max_attempts: int) -> None:
        chunk = self.chunks[seq]
        whole = (start, stop) == (0, chunk.rows)
        nbytes = chunk.text_bytes if whole else max(1, chunk.text_bytes * (stop - start) // max(1, chunk.rows))
        task = BookTask(self.next_task_id, seq, start, stop, nbytes, max_attempts)
        self.next_task_id += 1
        self.tasks[task.task_id] = task
        chunk.open_tasks += 1
        self.ready_tasks.append(task.task_id)

    # ---------------------------------------------------------------------------------- dispatch
    def next_dispatch(self, alive: Sequence[bool], now: float, capacity: int | None = None) -> list[BookTask]:
        """Route waiting tasks to the workers that can take them (alive and not being killed), at most
        `capacity` of them (the executor's free output slots); each returned task is queued on its worker."""
        if not self.ready_tasks:
            return []
        usable = [a and w.kill_reason is None for a, w in zip(alive, self.workers, strict=True)]
        if not any(usable):
            if self.ready_tasks and self.no_worker_since is None:
                self.no_worker_since = now
            return []
        self.no_worker_since = None
        sent: list[BookTask] = []
        while self.ready_tasks and (capacity is None or len(sent) < capacity):
            task = self.tasks[self.ready_tasks.popleft()]
            j = self.router.choose(task.seq, task.nbytes, self.outstanding, usable)
            worker = self.workers[j]
            task.worker, task.queued_at = j, now
            if not worker.queue:
                worker.head_since = now
            worker.queue.append(task.task_id)
            self.outstanding[j] += task.nbytes
            sent.append(task)
        return sent

    # ------------------------------------------------------------------------------------ events
    def on_ready(self, worker: int, now: float) -> None:
        """A (re)started worker is up: tasks sent while it started begin now."""
        state = self.workers[worker]
        state.ready, state.kill_reason, state.head_since = True, None, now
        self.startup_failures = 0

    def _take(self, worker: int, task_id: int, now: float) -> BookTask | None:
        """Take a task off its worker's queue; None when the event is stale (the task was re-routed)."""
        task = self.tasks.get(task_id)
        state = self.workers[worker]
        if task is None or task.worker != worker or task_id not in state.queue:
            return None
        state.queue.remove(task_id)
        self.outstanding[worker] -= task.nbytes
        state.head_since = now
        return task

    def on_done(self, worker: int, task_id: int, documents: int, tokens: int, timing: dict,
                now: float) -> Done | None:
        """A result arrived. None when it is stale: its task was re-routed meanwhile (already settled)."""
        task = self._take(worker, task_id, now)
        if task is None:
            return None
        del self.tasks[task_id]
        self.tasks_done += 1
        self.router.observe(worker, task.nbytes, timing["busy_s"])
        account = self.accounts[worker]
        account.chunks += 1
        account.bytes += task.nbytes
        account.documents += documents
        account.tokens += tokens
        for key in ("busy_s", "parse_s", "filter_s", "tokenize_s", "features_s", "transport_s"):
            setattr(account, key, getattr(account, key) + timing.get(key, 0.0))
        started = max(task.queued_at, now - timing["busy_s"])
        account.queue_wait_s += started - task.queued_at
        row = (task.seq, task.start, task.stop, task.attempts, worker, task.nbytes, task.queued_at - self.t0,
               started - self.t0, now - self.t0)
        for key, value in zip(ROUTING_COLUMNS, row, strict=True):
            self.routing[key].append(value)
        return Done(task, self._close_part(task.seq))

    def on_failed(self, worker: int, task_id: int, reason: str, now: float) -> Outcome | None:
        """The stage raised on a task. None when stale."""
        task = self._take(worker, task_id, now)
        if task is None:
            return None
        outcome = Outcome(released=[task])
        self._fault(task, reason, outcome)
        return outcome

    def on_worker_lost(self, worker: int, reason: str | None, now: float) -> Outcome:
        """A worker died (or was killed): the task it was computing is charged a fault, the rest of its
        queue is routed again uncharged. Raises RunFailed when workers keep dying."""
        state = self.workers[worker]
        reason = state.kill_reason or reason or "worker lost"
        self.deaths += 1
        self.accounts[worker].restarts += 1
        if not state.ready:
            self.startup_failures += 1
            if self.startup_failures >= 3 * self.workers_n:
                raise RunFailed(f"workers keep dying at start ({self.startup_failures} times in a row; last: "
                                f"{reason})")
        if self.deaths > 20 + 3 * self.next_task_id:
            raise RunFailed(f"workers keep dying ({self.deaths} times; last: {reason})")
        queue = list(state.queue)
        charged = queue[0] if queue and state.ready else None
        self.workers[worker] = _WorkerState()
        outcome = Outcome()
        for task_id in reversed(queue):
            task = self.tasks[task_id]
            self.outstanding[worker] -= task.nbytes
            outcome.released.append(task)
            if task_id != charged:  # never started: routed again, uncharged
                self.ready_tasks.appendleft(task_id)
        if charged is not None:
            self._fault(self.tasks[charged], reason, outcome)
        return outcome

    def overdue(self, now: float) -> list[tuple[int, str]]:
        """Workers whose current task ran past its timeout, to be killed (then reported lost), with the
        reason. The limit is per `chunk_bytes` of text: a larger task gets proportionally longer. Raises
        RunFailed when tasks waited for a live worker longer than the limit."""
        kills = []
        for j, state in enumerate(self.workers):
            if state.queue and state.ready and state.kill_reason is None:
                limit = self.limit(self.tasks[state.queue[0]].nbytes)
                if now - state.head_since > limit:
                    state.kill_reason = f"timeout: no result after {limit:g} s"
                    kills.append((j, state.kill_reason))
        if self.no_worker_since is not None and now - self.no_worker_since > self.chunk_timeout_s:
            raise RunFailed(f"no live worker for {self.chunk_timeout_s:g} s (deaths: {self.deaths})")
        return kills

    def limit(self, nbytes: int) -> float:
        return self.chunk_timeout_s * max(1.0, nbytes / self.chunk_bytes)

    def next_deadline(self, now: float, default: float) -> float:
        """Seconds until the earliest timeout could fire (at most `default`)."""
        wait = default
        for state in self.workers:
            if state.queue and state.ready and state.kill_reason is None:
                wait = min(wait, state.head_since + self.limit(self.tasks[state.queue[0]].nbytes) - now)
        return max(wait, 0.01)

    # ---------------------------------------------------------------------------------- internals
    def _fault(self, task: BookTask, reason: str, outcome: Outcome) -> None:
        """Retry, then bisect, then quarantine: a poison document ends isolated, the rest written."""
        task.attempts += 1
        task.worker = -1
        self.faults.append(f"chunk {task.seq} rows {task.start}-{task.stop}: {reason}")
        if task.attempts < task.max_attempts:
            self.ready_tasks.appendleft(task.task_id)
            return
        del self.tasks[task.task_id]
        if task.stop - task.start > 1:
            for start, stop, allowed in halves(task.start, task.stop):
                self._new_task(task.seq, start, stop, allowed)
        else:
            self.quarantined += 1
            if self.quarantined >= GIVE_UP_QUARANTINED and self.tasks_done == 0:
                raise RunFailed(f"no document gets through the stage ({self.quarantined} quarantined, none "
                                f"written; last: {reason})")
            outcome.quarantine.append((task.seq, task.start, reason))
        if self._close_part(task.seq):
            outcome.closed.append(task.seq)

    def _close_part(self, seq: int) -> bool:
        chunk = self.chunks[seq]
        chunk.open_tasks -= 1
        return chunk.open_tasks == 0
