"""A worker process: take tasks from its pipe, run the stage, put results in shared memory.

It talks only to the coordinator, over its own pipe (a killed worker cannot leave a
shared lock held), and moves data only through the slot pools.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

from prep.transport import Location, SlotPool


@dataclass(frozen=True)
class Task:
    """Rows [start, stop) of chunk `seq`, whose input lies at `source`; output goes to `out_slot`."""

    task_id: int
    seq: int
    start: int
    stop: int
    source: Location
    out_slot: int


def single_thread_env() -> None:
    """One tokenizer thread per worker: the pipeline's parallelism is its processes."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def worker_main(
    worker_id: int,
    conn: Connection,
    config_dict: dict,
    backend: str,
    in_spec: tuple[str, int, int],
    out_spec: tuple[str, int, int],
    debug_slow: float = 1.0,
) -> None:
    single_thread_env()
    from prep.config import PipelineConfig
    from prep.stage import Stage

    stage = Stage(PipelineConfig(**config_dict), backend)
    in_pool, out_pool = SlotPool.attach(in_spec), SlotPool.attach(out_spec)
    conn.send(("ready", worker_id))
    try:
        while True:
            task = conn.recv()
            if task is None:
                break
            started = time.perf_counter()
            try:
                batch = in_pool.read(task.source)
                if task.start or task.stop < len(batch):
                    batch = batch.slice(task.start, task.stop - task.start)
                output, stats = stage(batch)
                t_write = time.perf_counter()
                loc = out_pool.write(task.out_slot, output)
                del batch, output
                finished = time.perf_counter()
            except Exception:
                conn.send(("failed", task.task_id, traceback.format_exc(limit=8)))
                continue
            if debug_slow > 1.0:  # a straggler on purpose, for routing experiments
                time.sleep((finished - started) * (debug_slow - 1.0))
                finished = time.perf_counter()
            timing = {
                "busy_s": finished - started,
                "tokenize_s": stats.tokenize_s,
                "features_s": stats.features_s,
                "transport_s": finished - t_write,
            }
            conn.send(("done", task.task_id, loc, asdict(stats), timing))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        in_pool.close()
        out_pool.close()

