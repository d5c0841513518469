"""What load balance to expect from random routing: balls into bins, with sources.

A router that sends each of m chunks to one of n workers is throwing m balls into n
bins. These functions give the expected maximum load, and the *imbalance*
E[max] / (m/n) that `prep simulate` and a run's manifest print beside the measured
one, so a measured imbalance can be told apart from bad luck.

Which function for which regime (all checked against simulation in tests/test_simulate.py):

- `expected_max_load_exact`: exact for any m, n (cost grows as m^1.5 / sqrt(n)).
- `expected_max_load_poisson`: the Poisson approximation; relative error 5e-3 at m = n = 16,
  2e-5 at m = 1000, n = 16, and smaller as m/n grows.
- `expected_max_load_uniform`: the exact value while it is cheap, the Poisson one beyond.
  This is "the theory" everywhere in prep.
- `max_load_heavy_asymptotic` (m >> n ln n) and `max_load_light_asymptotic` (m = n): the
  textbook first-order forms; they are limits as n -> infinity and read high or low
  at a handful of workers (at n = 16: 1.31 for 1.23 at m = 1000, 1.94 for 3.08 at m = 16).
- `expected_imbalance_lognormal`: chunks of log-normal size (heavy tailed).
- `expected_max_load_p2c`: two choices; first order only.
- `expected_makespan_ratio_random`: the wall-time cost of random routing when only a
  window of chunks is in flight (as in the engine), which outlasts the imbalance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# P(max > k) below this is taken as 0 (see `_exact_range`).
_NEGLIGIBLE = 1e-16
# Largest sum of FFT lengths for which `expected_max_load_uniform` computes the exact value
# (m up to ~8000 at n = 16, ~0.05 s); beyond it the Poisson approximation is within 4e-6.
_EXACT_WORK = 2**22


def imbalance(loads: Sequence[float] | np.ndarray) -> float:
    """max / mean of a realised load vector; 1.0 when nothing was loaded."""
    loads = np.asarray(loads, dtype=float)
    mean = loads.mean()
    return float(loads.max() / mean) if mean > 0 else 1.0


def cv(loads: Sequence[float] | np.ndarray) -> float:
    """Coefficient of variation std / mean (population std) of a load vector; 0.0 when empty."""
    loads = np.asarray(loads, dtype=float)
    mean = loads.mean()
    return float(loads.std() / mean) if mean > 0 else 0.0


def max_load_heavy_asymptotic(m_balls: float, n_bins: int) -> float:
    """m/n + sqrt(2 (m/n) ln n): the max load for m >> n ln n, to first order.

    Raab & Steger, "Balls into bins -- a simple and tight analysis", RANDOM 1998, Thm 1
    (its case m >> n (ln n)^3). A limit in n: at n = 16 the root
    term is about 1.3x the true excess (sqrt(2 ln n) = 2.35 against E[max of 16 normals] = 1.77).
    """
    lam = m_balls / n_bins
    return lam + math.sqrt(2 * lam * math.log(n_bins))


def max_load_light_asymptotic(n_bins: int) -> float:
    """ln n / ln ln n: the max load when m = n, to first order (needs n >= 3).

    Gonnet, "Expected length of the longest probe sequence in hash code searching",
    JACM 28(2), 1981 (exactly Gamma^{-1}(n) - 3/2 + o(1)); Raab & Steger 1998, Thm 1.
    Far from the truth at small n (1.94 for an exact 3.08 at n = 16): use the exact value.
    """
    if n_bins < 3:
        raise ValueError("ln n / ln ln n needs n >= 3")
    return math.log(n_bins) / math.log(math.log(n_bins))


def _poisson_pmf(lam: float, top: int, low: int = 0) -> np.ndarray:
    """P(Poisson(lam) = j) for j = low..top, in log space so that large lam does not underflow
    (lgamma: exact to rounding, unlike a cumulative sum of logs)."""
    j = np.arange(low, top + 1)
    log_factorial = np.array([math.lgamma(i + 1) for i in range(low, top + 1)])
    return np.exp(-lam + j * math.log(lam) - log_factorial)


def expected_max_load_poisson(m_balls: float, n_bins: int) -> float:
    """E[max load] with each bin's count taken as an independent Poisson(m/n).

    P(max <= k) ~ P(Poisson(m/n) <= k)^n, E[max] = sum_k (1 - P(max <= k)).
    The Poisson approximation of the multinomial (Mitzenmacher & Upfal, "Probability and
    Computing", 2005, sec. 5.4). It keeps E[max] - m/n right to first order even though the
    true counts sum to m (for Gaussian counts E[max_i X_i - mean X] = E[max_i X_i] exactly);
    what it misses is small: 5e-3 relative at m = n = 16, 2e-5 at m = 1000, n = 16. `m_balls`
    may be fractional.
    """
    if m_balls <= 0 or n_bins == 1:
        return float(m_balls)
    lam = m_balls / n_bins
    # Beyond 40 sd (and 40) either side the Poisson mass is negligible: P(max <= k) is 0 below
    # `low` (each such k adds 1 to the sum) and 1 above `top`.
    spread = 40 * math.sqrt(lam) + 40
    low, top = max(0, int(lam - spread)), int(lam + spread)
    cdf = np.minimum(np.cumsum(_poisson_pmf(lam, top, low)), 1.0)
    return float(low + np.sum(1.0 - cdf**n_bins))


def _binomial_kl(k: np.ndarray, m: int, p: float) -> np.ndarray:
    """m * KL(k/m || p), the Chernoff exponent of Binomial(m, p) at k (0 at k = mp)."""
    x = np.clip(k / m, 1e-300, 1 - 1e-16)
    return m * (x * np.log(x / p) + (1 - x) * np.log((1 - x) / (1 - p)))


def _exact_range(m: int, n: int) -> tuple[int, int]:
    """The k at which P(max <= k) is neither 0 nor ~1: from ceil(m/n) (the max is at least the
    mean) to the first k with P(max > k) <= n P(Bin(m, 1/n) >= k+1) <= n exp(-m KL) negligible
    (union bound and Chernoff bound)."""
    low = math.ceil(m / n)
    k = np.arange(low, min(m, low + int(60 * math.sqrt(m / n) + 60)) + 1)  # the bound is met well before
    past = n * np.exp(-_binomial_kl(k + 1.0, m, 1 / n)) < _NEGLIGIBLE
    return low, int(k[past][0]) if past.any() else int(k[-1])


def _exact_work(m: int, n: int) -> int:
    low, high = _exact_range(m, n)
    return sum(1 << (n * k).bit_length() for k in range(low, high + 1))


def expected_max_load_exact(m_balls: int, n_bins: int) -> float:
    """E[max load] of m balls thrown uniformly into n bins, exactly (to rounding).

    Poissonization identity: with Y_i iid Poisson(lam), lam = m/n, the multinomial counts are
    the Y_i conditioned on sum Y_i = m, so
        P(max <= k) = P(Y_1 <= k)^n * P(Z_1 + ... + Z_n = m) / P(Poisson(m) = m),
    Z_i iid Poisson(lam) truncated to <= k. The n-fold convolution is one FFT raised to the
    n-th power (Mitzenmacher & Upfal 2005, sec. 5.4, for the identity). Cost: one FFT of
    length ~ n k per k in `_exact_range`, about m^1.5 / sqrt(n) in all.
    """
    m, n = int(m_balls), int(n_bins)
    if m <= 0 or n == 1:
        return float(max(m, 0))
    lam = m / n
    low, high = _exact_range(m, n)
    pmf = _poisson_pmf(lam, high)
    cdf = np.cumsum(pmf)
    p_total = math.exp(-m + m * math.log(m) - math.lgamma(m + 1))
    expected = float(low)  # P(max > k) = 1 for every k < low
    for k in range(low, high + 1):
        size = 1 << (n * k).bit_length()  # > n k: the cyclic convolution does not wrap
        spectrum = np.fft.rfft(pmf[: k + 1] / cdf[k], size)
        p_sum = np.fft.irfft(spectrum**n, size)[m]
        at_most = cdf[k] ** n * p_sum / p_total
        expected += 1.0 - min(max(at_most, 0.0), 1.0)
    return expected


def expected_max_load_uniform(m_balls: int, n_bins: int) -> float:
    """E[max load] of m balls into n bins: exact while cheap (see `_EXACT_WORK`), else Poisson."""
    if m_balls > 0 and n_bins > 1 and _exact_work(int(m_balls), int(n_bins)) <= _EXACT_WORK:
        return expected_max_load_exact(m_balls, n_bins)
    return expected_max_load_poisson(m_balls, n_bins)


def expected_imbalance_uniform(m_balls: int, n_bins: int) -> float:
    """E[max load] / (m/n) for uniform random routing of m equal chunks to n workers; 1.0 if m = 0."""
    if m_balls <= 0:
        return 1.0
    return expected_max_load_uniform(m_balls, n_bins) / (m_balls / n_bins)


def expected_imbalance_lognormal(m_balls: int, n_bins: int, sigma: float) -> float:
    """E[max load] / E[mean load] for m chunks of log-normal size (log-sd sigma) routed uniformly.

    Poissonized as above, a worker's load is compound Poisson: Poisson(m/n) chunks of iid
    size W, with characteristic function exp(lam (phi_W - 1)) -- computed on a grid by FFT
    (the "FFT method" for aggregate claims, Embrechts & Frei, "Panjer recursion versus FFT for
    compound distributions", Math. Meth. Oper. Res. 69, 2009). Loads are then taken
    independent, P(max <= x) = F(x)^n. Matches simulation to ~1% for sigma <= 1 and m/n >= 6.
    With heavier tails a single chunk can make a worker's load, the realised mean then moves
    with the max, and E[max / mean] falls below this E[max] / E[mean] (sigma = 2, m = 1000,
    n = 16: 2.90 here, 2.71 simulated). Size enters only through its shape: the scale cancels.
    """
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    if sigma == 0 or m_balls <= 0 or n_bins == 1:
        return expected_imbalance_uniform(m_balls, n_bins)
    lam = m_balls / n_bins  # sizes in units of the mean chunk: E[W] = 1, E[W^2] = exp(sigma^2)
    sd = math.sqrt(lam * math.exp(sigma**2))
    # Sizes above exp(sigma^2/2 + 4 sigma) carry < 4e-5 of the mean: clipped onto the grid's end.
    top = max(lam + 40 * sd, 2 * math.exp(sigma**2 / 2 + 4 * sigma))
    # A power-of-two step, 1/8 of the mean size or finer, puts the mean size on the grid, so that
    # rounding sizes to cells leaves the mean load where it is; at most 2^20 cells.
    step = max(2.0 ** math.floor(math.log2(min(1 / 8, sd / 16))), 2.0 ** math.ceil(math.log2(top / 2**20)))
    cells = 1 << math.ceil(math.log2(top / step))
    # Cell j holds the sizes within half a step of j * step; the last one also holds the tail.
    bounds = (np.arange(cells - 1) + 0.5) * step
    z = (np.log(bounds) + sigma**2 / 2) / (sigma * math.sqrt(2))
    size_pmf = np.diff(0.5 * (1 + np.vectorize(math.erf)(z)), prepend=0.0, append=1.0)
    length = 2 * cells  # loads reach past the grid of single sizes; keep the wrap-around negligible
    load_pmf = np.fft.irfft(np.exp(lam * (np.fft.rfft(size_pmf, length) - 1)), length)
    load_cdf = np.minimum(np.cumsum(load_pmf), 1.0)
    return float(np.sum(1.0 - load_cdf**n_bins) * step / lam)


def expected_max_load_p2c(m_balls: int, n_bins: int) -> float:
    """m/n + ln ln n / ln 2: max load with two choices (the less loaded of two random bins).

    Azar, Broder, Karlin & Upfal, "Balanced allocations", SIAM J. Comput. 29(1), 1999 (m = n);
    Berenbrink, Czumaj, Steger & Voecking, "Balanced allocations: the heavily loaded case",
    STOC 2000 / SIAM J. Comput. 35(6), 2006 (any m, with high probability). The theorems
    carry a + O(1) that they do not pin down; it is left out here, so this is the first-order
    value, kept within [ceil(m/n), m]. With two workers both are always compared: exactly ceil(m/2).
    """
    if m_balls <= 0:
        return 0.0
    floor = math.ceil(m_balls / n_bins)
    if n_bins <= 2:
        return float(floor)
    first_order = m_balls / n_bins + math.log(math.log(n_bins)) / math.log(2)
    return float(min(m_balls, max(floor, first_order)))


def expected_imbalance_p2c(m_balls: int, n_bins: int) -> float:
    """First-order E[max load] / (m/n) with two choices; 1.0 if m = 0."""
    if m_balls <= 0:
        return 1.0
    return expected_max_load_p2c(m_balls, n_bins) / (m_balls / n_bins)


def expected_makespan_ratio_random(window: int, n_workers: int) -> float:
    """(N + n - 1) / N: makespan / ideal of uniform random routing with N chunks in flight.

    With a bounded window the coordinator is a closed queueing network: N chunks circulate
    over n equal workers, each next chunk to a uniformly random one. For exponential service
    it has product form with every placement of the N chunks equally likely (Gordon & Newell,
    "Closed queuing systems with exponential servers", Oper. Res. 15(2), 1967), so a worker is
    idle with probability (n - 1) / (N + n - 1) and throughput falls to N / (N + n - 1) of the
    ideal -- however many chunks there are. Exact (in the long run) for exponential chunk sizes;
    fixed sizes do better (1.13 for 1.23 at N = 64, n = 16), heavier tails worse.
    """
    if window < 1 or n_workers < 1:
        raise ValueError("window and n_workers must be >= 1")
    return (window + n_workers - 1) / window
