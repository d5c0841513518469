"""The routing simulator and the balls-into-bins theory it is measured against."""

from __future__ import annotations

import itertools
import json
import math
import time
from fractions import Fraction

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from prep.core import theory
from prep.errors import UserError
from prep.tools.simulate import chunk_sizes, default_window, simulate, simulate_command

MIB = 1 << 20


def equal(workers: int) -> np.ndarray:
    return np.full(workers, float(MIB))


def mean_imbalance(router: str, m: int, n: int, seeds: range, **kw) -> tuple[float, float]:
    """Mean and standard error of the imbalance over seeds."""
    values = np.array([simulate(router, chunk_sizes("fixed", m), equal(n), s, **kw).imbalance for s in seeds])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# --- theory ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(6, 3), (5, 4), (7, 2), (4, 5), (1, 3)])
def test_exact_max_load_matches_enumeration(m, n):
    total = sum(max(np.bincount(bins, minlength=n)) for bins in itertools.product(range(n), repeat=m))
    assert theory.expected_max_load_exact(m, n) == pytest.approx(float(Fraction(total, n**m)), rel=1e-12)


def test_poisson_approximation_close_to_exact_and_uniform_switches():
    exact = theory.expected_max_load_exact
    assert theory.expected_max_load_poisson(16, 16) == pytest.approx(exact(16, 16), rel=6e-3)
    assert theory.expected_max_load_poisson(1000, 16) == pytest.approx(exact(1000, 16), rel=1e-4)
    assert theory.expected_max_load_uniform(1000, 16) == exact(1000, 16)
    big = theory.expected_max_load_uniform(10**6, 16)  # beyond the exact budget: Poisson, and quick
    assert big == theory.expected_max_load_poisson(10**6, 16)
    assert 62500 < big < theory.max_load_heavy_asymptotic(10**6, 16)


def test_asymptotic_and_first_order_forms():
    ln16 = math.log(16)
    assert theory.max_load_heavy_asymptotic(1000, 16) == pytest.approx(62.5 + math.sqrt(2 * 62.5 * ln16))
    assert theory.max_load_light_asymptotic(16) == pytest.approx(ln16 / math.log(ln16))
    assert theory.expected_imbalance_p2c(1000, 16) == pytest.approx(1 + math.log(ln16) / math.log(2) / 62.5)
    assert theory.expected_max_load_p2c(11, 2) == 6  # both workers compared every time: ceil(m/2)
    assert theory.expected_max_load_p2c(1, 16) == 1  # never more than m
    assert theory.expected_imbalance_uniform(0, 16) == 1.0
    assert theory.expected_imbalance_uniform(50, 1) == 1.0
    assert theory.expected_makespan_ratio_random(64, 16) == pytest.approx(79 / 64)
    # Sizes that barely vary: the compound Poisson becomes the plain Poisson approximation.
    assert theory.expected_imbalance_lognormal(1000, 16, 1e-3) == pytest.approx(
        theory.expected_max_load_poisson(1000, 16) / 62.5, rel=1e-4)


def test_imbalance_and_cv_of_a_load_vector():
    assert theory.imbalance([1, 2, 3]) == pytest.approx(1.5)
    assert theory.cv([1, 2, 3]) == pytest.approx(math.sqrt(2 / 3) / 2)
    assert theory.imbalance([0, 0]) == 1.0 and theory.cv([0, 0]) == 0.0


# --- simulation against theory --------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "seeds", "tolerance"),
    [
        # tolerance ~ 4 standard errors of the mean over the seeds (sd of one run: 0.65, 0.065, 0.0076)
        (16, 16, 1500, 0.07),
        (1000, 16, 300, 0.015),
        (100_000, 16, 10, 0.008),
    ],
)
def test_uniform_random_agrees_with_balls_into_bins(m, n, seeds, tolerance):
    mean, stderr = mean_imbalance("random", m, n, range(seeds))
    assert stderr < tolerance / 3
    assert mean == pytest.approx(theory.expected_imbalance_uniform(m, n), abs=tolerance)


def test_lognormal_sizes_agree_with_compound_poisson():
    values = [simulate("random", chunk_sizes("lognormal", 1000, s, 1.0), equal(16), s).imbalance
              for s in range(300)]  # sd of one run 0.14: standard error 0.008
    assert np.mean(values) == pytest.approx(theory.expected_imbalance_lognormal(1000, 16, 1.0), abs=0.03)


def test_p2c_is_balanced_and_beats_random():
    for s in range(20):
        sizes = chunk_sizes("fixed", 1000)
        p2c = simulate("p2c", sizes, equal(16), s)
        rand = simulate("random", sizes, equal(16), s)
        assert p2c.imbalance <= 1.05
        assert p2c.imbalance < rand.imbalance and p2c.makespan_ratio < rand.makespan_ratio


def test_p2c_without_a_window_is_textbook_two_choices():
    mean, _ = mean_imbalance("p2c", 1000, 16, range(100), window=0)
    # max load m/n + ln ln n / ln 2 + O(1); measured O(1) about -0.15 ball at n = 16
    assert mean == pytest.approx(theory.expected_imbalance_p2c(1000, 16), abs=0.006)


def test_weighted_gives_the_slow_worker_its_share():
    speeds = np.array([1, 1, 1, 0.3]) * MIB
    sizes = chunk_sizes("fixed", 20_000)
    weighted = simulate("weighted", sizes, speeds, 0)
    share = weighted.worker_bytes / weighted.worker_bytes.sum()
    assert share[3] == pytest.approx(0.3 / 3.3, abs=0.006)  # binomial sd 0.002
    assert share[:3] == pytest.approx(np.full(3, 1 / 3.3), abs=0.01)
    rand = simulate("random", sizes, speeds, 0)
    assert rand.worker_bytes[3] / rand.worker_bytes.sum() == pytest.approx(0.25, abs=0.01)
    assert weighted.makespan_ratio < 1.2 < 2.5 < rand.makespan_ratio


def test_round_robin_loads_are_exact():
    sizes = chunk_sizes("lognormal", 10, seed=3)
    result = simulate("round-robin", sizes, equal(3), 0)
    assert result.assignment.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert result.worker_chunks.tolist() == [4, 3, 3]
    assert result.worker_bytes.tolist() == [int(sizes[j::3].sum()) for j in range(3)]
    fixed = simulate("round-robin", chunk_sizes("fixed", 1000), equal(16), 0)
    assert fixed.imbalance == pytest.approx(63 / 62.5)


def test_timings_are_consistent():
    sizes = chunk_sizes("lognormal", 500, seed=1)
    speeds = np.array([1, 2, 0.5]) * MIB
    for router in ("random", "p2c", "weighted", "round-robin"):
        r = simulate(router, sizes, speeds, 7)
        assert r.worker_chunks.sum() == 500 and r.worker_bytes.sum() == sizes.sum()
        assert np.allclose(r.busy_s + r.idle_s, r.makespan)
        assert r.makespan >= r.ideal_makespan * (1 - 1e-12) and r.mean_queue_wait >= 0
        assert r.ideal_makespan == pytest.approx(sizes.sum() / speeds.sum())


def test_unbounded_window_is_balls_into_bins():
    # Everything is queued at t = 0, so with equal speeds the makespan is the fullest worker's.
    r = simulate("random", chunk_sizes("fixed", 200), equal(8), 5, window=0)
    assert r.makespan_ratio == pytest.approx(r.imbalance)
    # A worker with k one-second chunks makes them wait 0 + 1 + ... + (k - 1) seconds.
    assert r.mean_queue_wait == pytest.approx(sum(k * (k - 1) / 2 for k in r.worker_chunks.tolist()) / 200)


def test_random_with_a_window_loses_throughput_as_a_closed_network():
    sizes = np.maximum(1, np.random.default_rng(0).exponential(MIB, 30_000)).astype(np.int64)
    r = simulate("random", sizes, equal(16), 0, window=64)
    assert r.makespan_ratio == pytest.approx(theory.expected_makespan_ratio_random(64, 16), rel=0.03)
    assert default_window(16) == 64


def test_seeded():
    sizes = chunk_sizes("lognormal", 2000, seed=4)
    assert np.array_equal(sizes, chunk_sizes("lognormal", 2000, seed=4))
    assert not np.array_equal(sizes, chunk_sizes("lognormal", 2000, seed=5))
    for router in ("random", "p2c", "weighted"):
        a, b = simulate(router, sizes, equal(8), 1), simulate(router, sizes, equal(8), 1)
        assert np.array_equal(a.assignment, b.assignment) and a.makespan == b.makespan
        assert not np.array_equal(a.assignment, simulate(router, sizes, equal(8), 2).assignment)


def test_lognormal_sizes_have_the_asked_mean():
    sizes = chunk_sizes("lognormal", 200_000, seed=0, sigma=1.0)
    assert sizes.mean() == pytest.approx(MIB, rel=0.01)
    assert np.log(sizes).std() == pytest.approx(1.0, rel=0.01)


def test_a_million_chunks():
    sizes = chunk_sizes("fixed", 10**6)
    started = time.perf_counter()
    r = simulate("random", sizes, equal(16), 0)
    assert time.perf_counter() - started < 10
    assert r.worker_chunks.sum() == 10**6
    assert r.imbalance == pytest.approx(theory.expected_imbalance_uniform(10**6, 16), abs=0.005)


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("other")(lambda: None)  # two commands: typer keeps "simulate" as a subcommand
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["simulate", *args])


def test_textbook_table(cli):
    result = cli("--items", "10", "--workers", "3", "--seed", "0")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("item")))
    assert lines[header].split() == ["item", "bytes", "random", "p2c", "weighted", "round-robin"]
    rows = [line.split() for line in lines[header + 1: header + 11]]
    assert [int(r[0]) for r in rows] == list(range(10))
    assert all(int(r[1]) == MIB for r in rows)
    # The uniform router: worker = floor(3 u) for the seed's first uniforms (PCG64).
    expected = np.floor(np.random.Generator(np.random.PCG64(0)).random(10) * 3).astype(int)
    assert [int(r[2]) for r in rows] == expected.tolist()
    assert [int(r[5]) for r in rows] == [i % 3 for i in range(10)]
    totals = lines.index("per worker: chunks (MiB)")
    for j in range(3):
        cells = lines[totals + 2 + j].split()
        assert cells[:2] == [str(j), "1.00"]
        assert cells[2] == str(int((expected == j).sum()))
        assert cells[3] == f"({(expected == j).sum():.2f})"
    assert "uniform random  1.4780" in result.output  # exact E[max]/mean for 10 balls into 3 bins


def test_comparison_table_and_json(cli):
    result = cli("--items", "1000", "--workers", "16", "--seeds", "3")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()
            if line.startswith(("random ", "p2c ", "weighted ", "round-robin "))}
    assert len(rows) == 4 and "±" in rows["random"]
    assert f"{theory.expected_imbalance_uniform(1000, 16):.3f}" in rows["random"]

    data = json.loads(cli("--items", "1000", "--workers", "16", "--seeds", "3", "--json").output)
    assert data["theory"]["uniform_imbalance"] == theory.expected_imbalance_uniform(1000, 16)
    assert data["theory"]["p2c_imbalance"] == theory.expected_imbalance_p2c(1000, 16)
    got = data["routers"]["p2c"]
    want = [simulate("p2c", chunk_sizes("fixed", 1000), equal(16), s) for s in range(3)]
    assert got["imbalance"] == pytest.approx(np.mean([r.imbalance for r in want]))
    assert got["makespan_ratio"] == pytest.approx(np.mean([r.makespan_ratio for r in want]))
    assert got["mean_queue_wait"] == pytest.approx(np.mean([r.mean_queue_wait for r in want]))
    assert set(got) >= {"imbalance", "makespan_ratio", "mean_queue_wait", "cv", "theory_imbalance", "spread"}


def test_speeds_and_lognormal(cli):
    data = json.loads(cli("--items", "400", "--workers", "4", "--speeds", "1,1,1,0.3", "--sizes", "lognormal",
                          "--sigma", "0.5", "--routers", "weighted,random", "--json").output)
    assert list(data["routers"]) == ["weighted", "random"]
    assert data["routers"]["weighted"]["theory_imbalance"] is None  # speeds differ
    assert data["routers"]["random"]["theory_imbalance"] == theory.expected_imbalance_lognormal(400, 4, 0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "4", "--speeds", "1,1,0.3"], "--speeds has 3 value(s) but --workers is 4"),
        (["--workers", "2", "--speeds", "1,fast"], "bad --speeds"),
        (["--workers", "2", "--speeds", "1,0"], "positive"),
        (["--sizes", "pareto"], "bad --sizes"),
        (["--routers", "random,best"], "bad --routers"),
        (["--items", "0"], "at least 1"),
        (["--sigma", "-1"], "bad --sigma"),
        (["--window", "-1"], "--window"),
    ],
)
def test_bad_input_is_a_user_error(cli, args, message):
    result = cli(*args)
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception) and "\n" not in str(result.exception)
