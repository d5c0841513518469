"""Simulate routing chunks onto workers, with the real routers, to see what each one costs.

The model (a discrete-event simulation, time in seconds):

- all chunks exist at t = 0 and the coordinator dispatches them in `seq` order, instantly,
  while fewer than `window` chunks are in flight (dispatched, not finished) -- as the
  engine does, whose in-flight chunks are bounded by its shared-memory slots. When the
  window is full, the next chunk goes out the moment the earliest in-flight one finishes;
- each worker is a FIFO queue serving `speed[j]` bytes per second;
- the router sees `outstanding[j]` = bytes dispatched to worker j and not yet finished
  (the chunk in progress counted whole), the same bookkeeping as the engine, and
  `observe()` is called when a chunk finishes, so `weighted` learns the speeds.

The default window is the engine's, max(4, 4 x workers). `window = 0` dispatches
everything at t = 0: outstanding is then the bytes assigned so far, which is the textbook
balls-into-bins model (and `weighted` never learns). A window compares queues instead of
totals, and the smaller it is the more often they tie: at 1000 chunks on 16 equal
workers p2c's imbalance is 1.021 unbounded, 1.025 at 64 in flight, 1.050 at 32, 1.12 at 16.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import typer

from prep.core import theory
from prep.core.router import ROUTERS, make_router
from prep.errors import UserError

DEFAULT_CHUNK_BYTES = 1 << 20
SIZE_KINDS = ("fixed", "lognormal")
TEXTBOOK_ITEMS = 30  # up to this many chunks, `prep simulate` prints every decision


def default_window(workers: int) -> int:
    """Chunks in flight at most, as in the engine (engine.py: max(4, 4 x workers) slots)."""
    return max(4, 4 * workers)


@dataclass(frozen=True)
class SimResult:
    """One simulated run: where each chunk went, and what that cost."""

    router: str
    seed: int
    window: int  # chunks in flight at most (0: unbounded)
    sizes: np.ndarray  # chunk bytes, in seq order
    speeds: np.ndarray  # worker bytes per second
    assignment: np.ndarray  # chunk seq -> worker
    worker_bytes: np.ndarray
    worker_chunks: np.ndarray
    makespan: float  # seconds until the last chunk finished
    mean_queue_wait: float  # mean seconds a chunk waited in its worker's queue

    @property
    def busy_s(self) -> np.ndarray:
        return self.worker_bytes / self.speeds

    @property
    def idle_s(self) -> np.ndarray:
        """Time each worker had nothing to do before the run ended (clipped: rounding)."""
        return np.maximum(self.makespan - self.busy_s, 0.0)

    @property
    def imbalance(self) -> float:
        """max / mean of the bytes per worker (1 is perfect when the speeds are equal)."""
        return theory.imbalance(self.worker_bytes)

    @property
    def cv(self) -> float:
        return theory.cv(self.worker_bytes)

    @property
    def ideal_makespan(self) -> float:
        """Every worker busy to the end: total bytes / total speed."""
        return float(self.sizes.sum() / self.speeds.sum())

    @property
    def makespan_ratio(self) -> float:
        """makespan / ideal: the cost of the routing in wall time (>= 1)."""
        ideal = self.ideal_makespan
        return self.makespan / ideal if ideal > 0 else 1.0


def simulate(
    router_name: str,
    sizes: np.ndarray,
    speeds: np.ndarray,
    seed: int = 0,
    window: int | None = None,
) -> SimResult:
    """Route chunks of `sizes` bytes onto workers of `speeds` bytes/s with the named router.

    `window`: chunks in flight at most; None: `default_window`, 0: no bound (see the module).
    """
    sizes = np.asarray(sizes)
    speeds = np.asarray(speeds, dtype=float)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError("sizes must be a 1-D array of non-negative byte counts")
    if speeds.ndim != 1 or len(speeds) == 0 or not (np.isfinite(speeds) & (speeds > 0)).all():
        raise ValueError("speeds must be a non-empty 1-D array of positive numbers")
    workers = len(speeds)
    if window is None:
        window = default_window(workers)
    if window < 0:
        raise ValueError("window must be >= 0")
    limit = window or max(len(sizes), 1)
    router = make_router(router_name, workers, seed)
    choose, observe = router.choose, router.observe
    # Python scalars in the loop: numpy scalar arithmetic costs ~10x more per chunk.
    size_list = sizes.tolist()
    rate = speeds.tolist()
    outstanding = [0] * workers
    free_at = [0.0] * workers  # when each worker's queue runs dry
    assignment: list[int] = []
    in_flight: list[tuple[float, int]] = []  # (finish time, seq): a heap
    now = waited = 0.0

    def finish_next() -> float:
        done_at, seq = heapq.heappop(in_flight)
        j, nbytes = assignment[seq], size_list[seq]
        outstanding[j] -= nbytes
        observe(j, nbytes, nbytes / rate[j])
        return done_at

    for seq, nbytes in enumerate(size_list):
        if len(in_flight) >= limit:
            now = finish_next()
        j = choose(seq, nbytes, outstanding)
        start = free_at[j] if free_at[j] > now else now
        waited += start - now
        free_at[j] = start + nbytes / rate[j]
        outstanding[j] += nbytes
        assignment.append(j)
        heapq.heappush(in_flight, (free_at[j], seq))
    while in_flight:
        finish_next()

    placed = np.asarray(assignment, dtype=np.int64)
    return SimResult(
        router=router_name,
        seed=seed,
        window=window,
        sizes=sizes,
        speeds=speeds,
        assignment=placed,
        worker_bytes=np.bincount(placed, weights=sizes, minlength=workers).astype(np.int64),
        worker_chunks=np.bincount(placed, minlength=workers),
        makespan=max(free_at),
        mean_queue_wait=waited / len(size_list) if size_list else 0.0,
    )


def chunk_sizes(
    kind: str, items: int, seed: int = 0, sigma: float = 1.0, mean_bytes: int = DEFAULT_CHUNK_BYTES
) -> np.ndarray:
    """Chunk byte counts: `fixed` (all `mean_bytes`) or `lognormal` (mean `mean_bytes`, log-sd sigma).

    Drawn from a stream independent of the router's (a child of the same seed), so sizes and
    routing decisions are not correlated.
    """
    if kind == "fixed":
        return np.full(items, mean_bytes, dtype=np.int64)
    if kind == "lognormal":
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        drawn = rng.lognormal(math.log(mean_bytes) - sigma**2 / 2, sigma, items)
        return np.maximum(np.rint(drawn), 1).astype(np.int64)
    raise ValueError(f"unknown size distribution {kind!r}")


def _parse_routers(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ROUTERS]
    if unknown or not names:
        raise UserError(f"bad --routers {text!r}: choose from {', '.join(ROUTERS)} (comma-separated)")
    return names


def _parse_speeds(text: str | None, workers: int) -> np.ndarray:
    if text is None:
        return np.ones(workers)
    try:
        speeds = np.array([float(value) for value in text.split(",")])
    except ValueError:
        raise UserError(f"bad --speeds {text!r}: use comma-separated numbers, e.g. 1,1,1,0.3") from None
    if len(speeds) != workers:
        raise UserError(f"--speeds has {len(speeds)} value(s) but --workers is {workers}: "
                        "give one speed per worker")
    if not (np.isfinite(speeds) & (speeds > 0)).all():
        raise UserError(f"bad --speeds {text!r}: every speed must be a positive number")
    return speeds


def _theory(
    router: str, items: int, workers: int, sizes: str, sigma: float, equal_speeds: bool
) -> float | None:
    """The imbalance balls-into-bins theory gives for this router, where it has one.

    random and round-robin ignore speeds; weighted is uniform, and p2c the textbook two
    choices, only while the speeds are equal.
    """
    uniform_like = router == "random" or (router == "weighted" and equal_speeds)
    if sizes == "lognormal" and sigma > 0:
        return theory.expected_imbalance_lognormal(items, workers, sigma) if uniform_like else None
    if uniform_like:
        return theory.expected_imbalance_uniform(items, workers)
    if router == "p2c":
        return theory.expected_imbalance_p2c(items, workers) if equal_speeds else None
    if router == "round-robin":
        return math.ceil(items / workers) / (items / workers)
    return None


METRICS = ("imbalance", "makespan_ratio", "mean_queue_wait", "cv")


def _stats(results: list[SimResult]) -> dict[str, dict[str, float]]:
    table = {}
    for metric in METRICS:
        values = np.array([getattr(r, metric) for r in results])
        table[metric] = {"mean": float(values.mean()), "std": float(values.std()),
                         "min": float(values.min()), "max": float(values.max())}
    return table


def _cell(stat: dict[str, float], seeds: int, digits: int = 3) -> str:
    if seeds == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _textbook(results: dict[str, SimResult]) -> list[str]:
    """Every decision (item, size, worker per router), then the totals per worker."""
    names = list(results)
    first = results[names[0]]
    widths = [max(len(name), 11) for name in names]

    def columns(cells: list[str]) -> str:
        return "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))

    lines = ["item       bytes  " + columns(names)]
    for seq, nbytes in enumerate(first.sizes.tolist()):
        lines.append(f"{seq:>4} {nbytes:>11}  " + columns([str(results[n].assignment[seq]) for n in names]))

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<20}  " + columns(cells)

    lines += ["", "per worker: chunks (MiB)", row("worker  speed", names)]
    for j, speed in enumerate(first.speeds.tolist()):
        cells = [f"{results[n].worker_chunks[j]} ({results[n].worker_bytes[j] / 2**20:.2f})" for n in names]
        lines.append(row(f"{j:>6}  {speed / DEFAULT_CHUNK_BYTES:>5.2f}", cells))
    for label, metric in (("imbalance (max/mean)", "imbalance"), ("makespan / ideal", "makespan_ratio")):
        lines.append(row(label, [f"{getattr(results[n], metric):.3f}" for n in names]))
    return lines


def simulate_command(
    items: Annotated[int, typer.Option(help="chunks to route")] = 1000,
    workers: Annotated[int, typer.Option(help="workers")] = 16,
    seed: Annotated[int, typer.Option(help="first seed (routing and sizes)")] = 0,
    seeds: Annotated[int, typer.Option(help="seeds to run: seed, seed+1, ...; shows mean ± std")] = 1,
    routers: Annotated[str, typer.Option(help="comma-separated routers to compare")] = ",".join(ROUTERS),
    speeds: Annotated[str | None, typer.Option(help="relative speeds, one per worker: 1,1,1,0.3")] = None,
    sizes: Annotated[str, typer.Option(help="chunk sizes: fixed | lognormal")] = "fixed",
    sigma: Annotated[float, typer.Option(help="log-sd of lognormal sizes (heavier tail when larger)")] = 1.0,
    window: Annotated[int | None, typer.Option(help="chunks in flight (default 4 x workers; 0: all)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Route simulated chunks with each router and compare the balance with balls-into-bins theory.

    Up to 30 items, every decision is printed. Times are in units of one mean chunk on a
    worker of speed 1.
    """
    if items < 1 or workers < 1 or seeds < 1:
        raise UserError("--items, --workers and --seeds must be at least 1")
    if sizes not in SIZE_KINDS:
        raise UserError(f"bad --sizes {sizes!r}: choose {' or '.join(SIZE_KINDS)}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise UserError(f"bad --sigma {sigma}: it must be a number >= 0")
    if window is not None and window < 0:
        raise UserError("--window must be >= 0 (0: no bound)")
    names = _parse_routers(routers)
    relative = _parse_speeds(speeds, workers)
    rates = relative * DEFAULT_CHUNK_BYTES
    window = default_window(workers) if window is None else window
    runs: dict[str, list[SimResult]] = {name: [] for name in names}
    for s in range(seed, seed + seeds):
        chunk_bytes = chunk_sizes(sizes, items, s, sigma)
        for name in names:
            runs[name].append(simulate(name, chunk_bytes, rates, s, window))
    equal = bool((relative == relative[0]).all())
    expected = {name: _theory(name, items, workers, sizes, sigma, equal) for name in names}
    uniform = theory.expected_imbalance_uniform(items, workers)
    two_choices = theory.expected_imbalance_p2c(items, workers)
    lognormal = sizes == "lognormal"
    closed = theory.expected_makespan_ratio_random(window, workers) if window else None
    weighted_balls = theory.expected_imbalance_lognormal(items, workers, sigma) if lognormal else None
    if json_out:
        stats = {name: _stats(results) for name, results in runs.items()}
        typer.echo(json.dumps({
            "items": items, "workers": workers, "seeds": list(range(seed, seed + seeds)), "sizes": sizes,
            "sigma": sigma if sizes == "lognormal" else None, "speeds": relative.tolist(), "window": window,
            "theory": {"uniform_imbalance": uniform, "p2c_imbalance": two_choices,
                       "lognormal_uniform_imbalance": weighted_balls, "random_makespan_ratio": closed},
            "routers": {name: {**{metric: stats[name][metric]["mean"] for metric in METRICS},
                               "spread": {metric: stats[name][metric] for metric in METRICS},
                               "theory_imbalance": expected[name]} for name in names},
        }, indent=2))
        return
    size_text = (f"fixed ({DEFAULT_CHUNK_BYTES} bytes)" if sizes == "fixed"
                 else f"lognormal (mean {DEFAULT_CHUNK_BYTES} bytes, sigma {sigma:g})")
    speed_text = "equal" if equal else ",".join(f"{v:g}" for v in relative)
    seed_text = f"seed {seed}" if seeds == 1 else f"seeds {seed}..{seed + seeds - 1}"
    typer.echo(f"{items} chunks onto {workers} workers; sizes {size_text}; speeds {speed_text}; "
               f"{seed_text}; window {window or 'unbounded'}")
    typer.echo("")
    if items <= TEXTBOOK_ITEMS:
        for line in _textbook({name: results[0] for name, results in runs.items()}):
            typer.echo(line)
        typer.echo("")
    if items > TEXTBOOK_ITEMS or seeds > 1:
        width = 9 if seeds == 1 else 17
        typer.echo(f"{'router':<12} {'imbalance':>{width}} {'theory':>7} {'makespan/ideal':>{width}} "
                   f"{'mean wait':>{width}} {'cv':>{width}}")
        for name, results in runs.items():
            stat = _stats(results)
            want = "—" if expected[name] is None else f"{expected[name]:.3f}"
            cells = [_cell(stat["imbalance"], seeds), want, _cell(stat["makespan_ratio"], seeds),
                     _cell(stat["mean_queue_wait"], seeds, 2), _cell(stat["cv"], seeds)]
            typer.echo(f"{name:<12} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, (width, 7) + (width,) * 3,
                                                                                  strict=True)))
        typer.echo("")
    lam = items / workers
    typer.echo(f"theory, {items} balls into {workers} bins (imbalance = E[max load] / mean):")
    typer.echo(f"  uniform random  {uniform:.4f}  exact balls into bins"
               + (f"; m/n + sqrt(2 (m/n) ln n) (Raab-Steger 1998): "
                  f"{theory.max_load_heavy_asymptotic(items, workers) / lam:.4f}" if workers > 1 else ""))
    if weighted_balls is not None:
        typer.echo(f"  lognormal sizes {weighted_balls:.4f}  uniform random, compound Poisson "
                   "(reads high for sigma > 1)")
    typer.echo(f"  two choices     {two_choices:.4f}  m/n + ln ln n / ln 2 (Azar et al. 1999; "
               "Berenbrink et al. 2000), + O(1) left out")
    if closed is not None and items > window:
        typer.echo(f"  random makespan {closed:.4f}  makespan/ideal with {window} in flight, exponential"
                   " sizes (Gordon-Newell 1967);")
        typer.echo("                  fixed sizes do better, heavier tails worse")
    typer.echo("mean wait: time a chunk spends queued at its worker, in mean-chunk times of a speed-1 worker")
