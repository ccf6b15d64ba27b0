"""The statistics of a comparison: mean and 95% CI over seeds, and paired tests on shared held-out items.

Plain numpy and `math` (scipy is not a dependency). Two kinds of noise, two tools:
- seed noise (how much another seed would move a final metric): Student t interval over the arm's seeds,
  right for the 2-10 seeds sweeps have, where a normal interval would be far too narrow;
- item noise (how much another draw of held-out problems would move a difference): tests paired by
  example id, which remove the between-item variance that dominates small eval sets.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# scipy.stats.t.ppf(0.975, df) for df = 1..30.
_T975 = (12.706204736, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
         2.262157163, 2.228138852, 2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
         2.109815578, 2.10092204, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.06865761, 2.063898562,
         2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The two-sided 95% Student t critical value: tabled to 30 degrees of freedom, then the Cornish-Fisher
    expansion in 1/df (within 3e-8 of the exact value from 30 on)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(g / df ** (i + 1) for i, g in enumerate(terms))


class MeanCI(NamedTuple):
    """Mean over seeds with the half-width of its 95% t interval; `half_width` is None for one seed, as a
    single run says nothing about how much the seed moves the result."""

    mean: float
    half_width: float | None
    n: int


def mean_ci(values) -> MeanCI:
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return MeanCI(math.nan, None, 0)
    if x.size == 1:
        return MeanCI(float(x[0]), None, 1)
    return MeanCI(float(x.mean()), t_quantile_975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), int(x.size))


class Bootstrap(NamedTuple):
    """Mean difference (arm minus baseline) over paired items, its 95% percentile interval, and a two-sided
    p-value for "no difference"."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    items: int
    resamples: int


def paired_bootstrap(baseline, arm, *, resamples: int = 10_000, seed: int = 0, chunk: int = 500) -> Bootstrap:
    """Paired bootstrap of the mean difference: resample items (both arms' scores of an item together).

    The p-value shifts the bootstrap distribution to the null (mean 0) and counts resampled means at least
    as far from the observed one as the observed one is from 0, with the +1 correction so it is never 0
    (the shifted-null bootstrap test, Efron & Tibshirani 1993, ch. 16). Seeded, so a page is reproducible. Works in chunks of resamples so
    10k resamples of a large eval set stay small in memory.
    """
    a, b = np.asarray(baseline, np.float64), np.asarray(arm, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two vectors of one length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no paired items to bootstrap")
    d = b - a
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, d.size, size=(min(chunk, resamples - i), d.size))].mean(axis=1)
                            for i in range(0, resamples, chunk)])
    low, high = np.quantile(means, [0.025, 0.975])
    extreme = int(np.sum(np.abs(means - observed) >= abs(observed) - 1e-12))
    return Bootstrap(observed, float(low), float(high), (1 + extreme) / (1 + resamples), int(d.size), resamples)


class McNemar(NamedTuple):
    """Exact McNemar test on paired pass/fail: `only_baseline` items only the baseline passed, `only_arm`
    items only the arm passed; the p-value is two-sided."""

    only_baseline: int
    only_arm: int
    p_value: float
    items: int


def binomial_two_sided(k: int, n: int) -> float:
    """P(X <= min(k, n-k)) doubled for X ~ Binomial(n, 1/2), capped at 1: the exact McNemar p-value."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(low + 1)) / 2**n)


def mcnemar_exact(baseline_pass, arm_pass) -> McNemar:
    """Only the discordant items count: an item both pass (or both fail) says nothing about which is better.
    Exact (binomial) rather than chi-squared, as sweeps of small eval sets often have few discordant items."""
    a, b = np.asarray(baseline_pass, bool), np.asarray(arm_pass, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have one length, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    return McNemar(only_a, only_b, binomial_two_sided(only_b, only_a + only_b), int(a.size))
