"""The task book replayed without processes: the event sequences both executors produce, in microseconds."""

from __future__ import annotations

import pytest

from prep.core.retry import CHUNK_ATTEMPTS, DOCUMENT_ATTEMPTS
from prep.core.router import make_router
from prep.core.taskbook import GIVE_UP_QUARANTINED, TaskBook
from prep.errors import RunFailed

TIMING = {"busy_s": 0.01, "tokenize_s": 0.005, "features_s": 0.002, "transport_s": 0.0}


def book(workers: int = 2, router: str = "round-robin", timeout: float = 10.0) -> TaskBook:
    return TaskBook(make_router(router, workers, 0), chunk_bytes=1000, chunk_timeout_s=timeout)


def ready_all(b: TaskBook, now: float = 0.0) -> None:
    for j in range(b.workers_n):
        b.on_ready(j, now)


def settle(b: TaskBook, fails, now: float = 1.0, alive=None) -> tuple[dict[int, list], list]:
    """Run every task to the end: a task whose rows `fails(seq, start, stop)` says fail raises in the stage.
    Returns {seq: [(start, stop)] computed} and the quarantine decisions."""
    computed: dict[int, list] = {}
    quarantined = []
    for _ in range(10_000):
        sent = b.next_dispatch(alive or [True] * b.workers_n, now)
        if not sent:
            break
        for task in sent:
            if fails(task.seq, task.start, task.stop):
                outcome = b.on_failed(task.worker, task.task_id, "exception: boom", now)
                quarantined += outcome.quarantine
            else:
                assert b.on_done(task.worker, task.task_id, task.stop - task.start, 1, TIMING, now) is not None
                computed.setdefault(task.seq, []).append((task.start, task.stop))
    assert not b.tasks and not b.ready_tasks
    return computed, quarantined


def test_a_worker_dies_with_two_queued_tasks():
    b = book(workers=2, router="round-robin")
    ready_all(b)
    for seq in range(4):
        b.admit(seq, rows=10, text_bytes=500)
    sent = b.next_dispatch([True, True], now=0.0)
    on_zero = [t for t in sent if t.worker == 0]
    assert len(on_zero) == 2  # the head is being computed, the second waits behind it
    outcome = b.on_worker_lost(0, "killed by signal SIGKILL", now=1.0)
    assert {t.task_id for t in outcome.released} == {t.task_id for t in on_zero}
    head, queued = on_zero
    assert head.attempts == 1 and queued.attempts == 0  # only the running task is charged
    assert b.accounts[0].restarts == 1 and b.outstanding[0] == 0
    assert list(b.ready_tasks)[:2] == [head.task_id, queued.task_id]  # both go first, in their order
    b.on_ready(0, now=1.0)
    for t in sent:
        if t.worker == 1:  # worker 1 goes on with its own queue
            assert b.on_done(1, t.task_id, 10, 1, TIMING, now=1.0) is not None
    computed, quarantined = settle(b, lambda *_: False)
    assert quarantined == [] and sorted(computed) == [head.seq, queued.seq]
    assert all(parts == [(0, 10)] for parts in computed.values())
    assert sorted(b.routing["seq"]) == [0, 1, 2, 3]  # each chunk written once
    assert b.routing["attempt"][b.routing["seq"].index(head.seq)] == 1


def test_a_death_before_ready_charges_nothing_and_repeated_start_deaths_give_up():
    b = book(workers=2)
    b.admit(0, rows=5, text_bytes=100)
    (task,) = b.next_dispatch([True, True], now=0.0)
    b.on_worker_lost(task.worker, "exit code 1", now=0.1)
    assert task.attempts == 0 and b.startup_failures == 1
    with pytest.raises(RunFailed, match="keep dying at start"):
        for _ in range(6):
            b.on_worker_lost(0, "exit code 1", now=0.2)


def test_a_result_after_its_task_was_rerouted_is_ignored():
    b = book(workers=2, router="round-robin")
    ready_all(b)
    b.admit(0, rows=8, text_bytes=400)
    (task,) = b.next_dispatch([True, True], now=0.0)
    first = task.worker
    b.on_worker_lost(first, "killed by signal SIGKILL", now=0.5)  # its pipe's last message still comes later
    b.on_ready(first, now=0.6)
    (again,) = b.next_dispatch([True, True], now=0.6)
    assert again.task_id == task.task_id
    late = b.on_done(first, task.task_id, 8, 3, TIMING, now=0.7) if again.worker != first else None
    assert late is None or again.worker == first
    done = b.on_done(again.worker, again.task_id, 8, 3, TIMING, now=0.8)
    assert done is not None and done.closed
    assert b.on_done(again.worker, again.task_id, 8, 3, TIMING, now=0.9) is None  # a duplicate: settled once
    assert b.tasks_done == 1 and b.routing["seq"] == [0]


def test_a_poison_document_in_a_chunk_of_64_is_isolated():
    b = book(workers=3, router="p2c")
    ready_all(b)
    b.admit(7, rows=64, text_bytes=64_000)
    failures = []

    def fails(seq, start, stop):
        if start <= 37 < stop:
            failures.append((start, stop))
            return True
        return False

    computed, quarantined = settle(b, fails)
    assert quarantined == [(7, 37, "exception: boom")]
    rows = sorted(r for start, stop in computed[7] for r in range(start, stop))
    assert rows == [r for r in range(64) if r != 37]  # every other row exactly once
    assert len(failures) == CHUNK_ATTEMPTS + 5 + DOCUMENT_ATTEMPTS  # 2 whole, 1 per halving (64->2), 3 alone
    assert b.quarantined == 1


def test_a_stage_that_fails_on_everything_gives_up():
    b = book(workers=2)
    ready_all(b)
    for seq in range(20):
        b.admit(seq, rows=1, text_bytes=10)
    with pytest.raises(RunFailed, match="no document gets through"):
        settle(b, lambda *_: True)
    assert b.quarantined == GIVE_UP_QUARANTINED


def test_a_hang_past_its_scaled_timeout_is_killed_and_charged():
    b = book(workers=1, timeout=2.0)
    ready_all(b)
    b.admit(0, rows=1, text_bytes=3000)  # three chunk_bytes of text: three times the limit
    (task,) = b.next_dispatch([True], now=0.0)
    assert b.overdue(now=5.9) == []
    assert b.next_deadline(now=5.0, default=10.0) == pytest.approx(1.0)
    kills = b.overdue(now=6.1)
    assert kills == [(0, "timeout: no result after 6 s")]
    assert b.overdue(now=7.0) == []  # asked once
    outcome = b.on_worker_lost(0, "killed by signal SIGKILL", now=6.2)
    assert task.attempts == 1 and "timeout" in b.faults[-1] and outcome.quarantine == []


def test_no_live_worker_for_longer_than_the_timeout_fails():
    b = book(workers=2, timeout=1.0)
    b.admit(0, rows=2, text_bytes=10)
    assert b.next_dispatch([False, False], now=0.0) == []
    b.overdue(now=0.5)
    with pytest.raises(RunFailed, match="no live worker"):
        b.overdue(now=1.5)


def test_a_lost_result_reopens_a_closed_chunk():
    b = book(workers=2)
    ready_all(b)
    b.admit(3, rows=10, text_bytes=1000)
    (task,) = b.next_dispatch([True, True], now=0.0)
    assert b.on_done(task.worker, task.task_id, 10, 5, TIMING, now=0.1).closed
    assert not b.is_open(3)
    b.reopen(3, 0, 10)  # the node holding its output died before the writer fetched it
    assert b.is_open(3)
    (again,) = b.next_dispatch([True, True], now=0.2)
    assert (again.seq, again.start, again.stop, again.nbytes) == (3, 0, 10, 1000)
    assert b.on_done(again.worker, again.task_id, 10, 5, TIMING, now=0.3).closed
    b.forget(3)
    assert 3 not in b.chunks


def test_capacity_bounds_what_is_dispatched():
    b = book(workers=2)
    ready_all(b)
    for seq in range(5):
        b.admit(seq, rows=1, text_bytes=10)
    assert len(b.next_dispatch([True, True], now=0.0, capacity=2)) == 2
    assert len(b.ready_tasks) == 3


def test_a_chunk_reopened_after_its_last_result_stays_open():
    """The local writer may die while it is told of a chunk's last part: the part is computed again before the
    executor closes the chunk, which must then stay open (the executor asks is_open, not the stale answer)."""
    b = book(workers=1)
    ready_all(b)
    b.admit(5, rows=4, text_bytes=100)
    (task,) = b.next_dispatch([True], now=0.0)
    assert b.on_done(0, task.task_id, 4, 2, TIMING, now=0.1).closed
    b.reopen(5, 0, 4)
    assert b.is_open(5)
    (again,) = b.next_dispatch([True], now=0.2)
    assert b.on_done(0, again.task_id, 4, 2, TIMING, now=0.3).closed and not b.is_open(5)
