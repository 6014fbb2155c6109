"""Deciding a claim between two arms from their per-seed results, and how many seeds it needs.

A claim compares the final metric of two arms, one value per finished seed:

- ``arm > than`` (``<``: the mirror image) is a one-sided Welch t-test in the claimed
  direction. Agreed when its p is below alpha; contradicted when the opposite one-sided test's
  p is below alpha; otherwise not decided.
- ``arm ~ than ± M`` (about equal, margin M in the metric's units) is decided by two one-sided
  Welch tests (TOST). Agreed when both "difference > -M" and "difference < M" are shown (the
  difference lies inside the margin); contradicted when "difference > M" or "difference < -M"
  is shown (it lies outside), each at alpha / 2 (Bonferroni: with a margin small beside the
  noise, either side at alpha would contradict a true claim almost twice as often as alpha);
  otherwise not decided.

The tests are unpaired even when both arms ran the same seeds. A shared seed fixes the data
order and augmentation, but two architectures draw different initial weights from it, so the
pairing carries little of the run-to-run noise; the seed sets of two arms also differ as soon
as a trial fails or seeds are added to one arm. The unpaired test is valid either way, and when
shared seeds do correlate the arms it only errs on the side of "not decided".

Welch's test does not assume equal spreads. Its degrees of freedom are Welch-Satterthwaite's,
and the 95% confidence interval of the difference of means uses the same. When neither arm has
any spread (every seed of an arm gave the same value, as happens with a coarse metric on a small
validation set), there is no spread to estimate and Welch's test is undefined; each one-sided
test is then the exact permutation test of the difference of means. Of the C(n_a + n_b, n_a)
ways to split the pooled values into the two arms only the observed one is as extreme, so a
difference in the tested direction has p = 1 / C(n_a + n_b, n_a) and any other has p 1. Two
seeds per arm can then never decide (p 1/6), and at alpha 0.05 it takes four (p 1/70). The
test's name says when this rule decided.

The claims of one sweep are corrected together for multiplicity (Holm): every claim's deciding
p (the smaller of its "agreed" and "contradicted" p) is Holm-adjusted, and a claim is decided
when its adjusted p is below alpha.

Seeds needed (power 0.8 at a given alpha; the report passes alpha / k for k claims, the level
Holm holds the first claim to; equal seeds per arm and each arm's observed spread): for
``>``/``<`` at the observed difference, for ``~`` at a true difference of zero (the margin is the distance to prove). The smallest detectable
difference is the true difference (for ``~``: the margin) that the current seeds would decide
with power 0.8. Power is Welch's exact power for normally distributed seeds at the observed
spreads (the variances' chi-square laws integrated numerically; see _welch_power), which at a
few seeds is well below what the noncentral t at fixed df gives; for arms without spread it
comes from the permutation test above (seeds needed: the fewest per arm whose p is below alpha;
detectable: any nonzero difference once the current seeds reach that, none before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # seeds-needed searches stop here: beyond it the answer is "more than"
AGREED, CONTRADICTED, UNDECIDED = "agreed", "contradicted", "not decided"
MIN_SEEDS = 2  # a spread needs two values


@dataclass(frozen=True)
class Test:
    """One claim's test, before the multiplicity correction."""

    diff: float  # mean(arm) - mean(than)
    ci_low: float  # 95% confidence interval of diff (Welch-Satterthwaite df)
    ci_high: float
    p_agree: float  # p of the test that shows the claim
    p_contra: float  # p of the test that shows its opposite
    test: str  # the test's name, for the report


def mean(x: np.ndarray) -> float:
    """The mean; exactly the value when every value is the same (the mean of five 0.1s rounds
    to 0.10000000000000002, and two flat arms of 0.1 would differ)."""
    return float(x[0]) if bool(np.all(x == x[0])) else float(x.mean())


def variance(x: np.ndarray) -> float:
    """Sample variance (ddof 1); exactly 0 when every value is the same. numpy's two-pass
    variance of [0.1, 0.1, 0.1] is 2.9e-34 (the mean rounds), which Welch's test would read as
    a real, tiny spread and call any difference shown at p 1e-34."""
    return 0.0 if bool(np.all(x == x[0])) else float(x.var(ddof=1))


def welch_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of mean(a) - mean(b) with Welch-Satterthwaite degrees of freedom."""
    diff = mean(a) - mean(b)
    se, df = _se_df(variance(a), variance(b), len(a), len(b))
    if se == 0:
        return diff, diff
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff - half, diff + half


def _se_df(va: float, vb: float, na: float, nb: float) -> tuple[float, float]:
    """Standard error of a difference of means and its Welch-Satterthwaite df."""
    ua, ub = va / na, vb / nb
    se = math.sqrt(ua + ub)
    if se == 0:
        return 0.0, float(na + nb - 2)
    return se, (ua + ub) ** 2 / (ua ** 2 / (na - 1) + ub ** 2 / (nb - 1))


def flat_p(n_a: int, n_b: int) -> float:
    """p of the exact permutation test when neither arm has spread and the difference lies in
    the tested direction: the observed split is the one most extreme of C(n_a + n_b, n_a)."""
    splits = math.comb(n_a + n_b, n_a)
    return 1.0 / splits if splits < 1e300 else 0.0  # an int past float's range: p underflows


def one_sided_p(a: np.ndarray, b: np.ndarray, shift: float, alternative: str) -> float:
    """p of Welch's one-sided test of mean(a) - mean(b) against ``shift``.

    ``alternative`` "greater": H1 is mean(a) - mean(b) > shift; "less": < shift.
    """
    diff = mean(a) - mean(b) - shift
    se, df = _se_df(variance(a), variance(b), len(a), len(b))
    if se == 0:  # no spread: exact permutation test
        shown = diff > 0 if alternative == "greater" else diff < 0
        return flat_p(len(a), len(b)) if shown else 1.0
    # the statistic by hand rather than scipy.stats.ttest_ind, which warns of "catastrophic
    # cancellation" whenever one arm is flat (a coarse metric does that) though the p is exact
    t_stat = diff / se
    return float(stats.t.sf(t_stat, df) if alternative == "greater" else stats.t.cdf(t_stat, df))


def claim_test(op: str, arm: Sequence[float], than: Sequence[float],
               margin: float | None = None) -> Test:
    """The test of ``arm OP than`` (op ``>``, ``<`` or ``~``; ``~`` needs ``margin``).

    Both samples need at least MIN_SEEDS values.
    """
    a, b = np.asarray(arm, dtype=float), np.asarray(than, dtype=float)
    if min(len(a), len(b)) < MIN_SEEDS:
        raise ValueError(f"needs at least {MIN_SEEDS} values per arm")
    low, high = welch_ci(a, b)
    diff = mean(a) - mean(b)
    flat = variance(a) == 0 and variance(b) == 0  # one_sided_p: the permutation test
    if op in (">", "<"):
        toward, away = ("greater", "less") if op == ">" else ("less", "greater")
        name = f"no spread in either arm: exact permutation test ({op})" if flat else \
            f"Welch t, one-sided ({op})"
        return Test(diff, low, high, one_sided_p(a, b, 0.0, toward),
                    one_sided_p(a, b, 0.0, away), name)
    if op != "~" or margin is None or margin <= 0:
        raise ValueError(f"unknown claim {op!r} (margin {margin!r})")
    inside = max(one_sided_p(a, b, -margin, "greater"), one_sided_p(a, b, margin, "less"))
    outside = min(1.0, 2 * min(one_sided_p(a, b, margin, "greater"),
                               one_sided_p(a, b, -margin, "less")))
    name = "no spread in either arm: exact permutation tests, margin" if flat else \
        "TOST, Welch t, margin"
    return Test(diff, low, high, inside, outside, f"{name} ±{margin:g}")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p values, in the input's order (step-down, monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def decide(tests: Sequence[Test], alpha: float = ALPHA) -> list[tuple[str, float]]:
    """(verdict, Holm-adjusted deciding p) of each test, corrected together."""
    deciding = [min(t.p_agree, t.p_contra) for t in tests]
    out = []
    for t, p in zip(tests, holm(deciding)):
        if p >= alpha:
            out.append((UNDECIDED, p))
        else:
            out.append((AGREED if t.p_agree <= t.p_contra else CONTRADICTED, p))
    return out


# --- power -----------------------------------------------------------------------------------


# Power is computed exactly rather than from the noncentral t with Welch's df at the true
# spreads, which overstates it at few seeds (0.80 where Welch's test has 0.57 at 2 seeds per
# arm, since the df it uses are random and small). For normal seeds the observed difference D
# is independent of the two sample variances, so given them the test rejects on an interval of
# D and the power is the normal probability of that interval, averaged over the variances:
# each is sd^2 chi2(n - 1) / (n - 1), integrated by Gauss-Legendre quadrature over its
# quantiles (48 x 48 points; within 1e-5 of the exact value where one arm is flat and a
# one-sample noncentral t gives it in closed form).
_QUANTILES, _WEIGHTS = np.polynomial.legendre.leggauss(48)
_QUANTILES, _WEIGHTS = (_QUANTILES + 1) / 2, _WEIGHTS / 2


def _variances(sd: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights of an arm's sample variance (one node when it is flat)."""
    if sd == 0:
        return np.zeros(1), np.ones(1)
    return sd ** 2 * stats.chi2.ppf(_QUANTILES, n - 1) / (n - 1), _WEIGHTS


def _welch_power(test: str, delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int,
                 alpha: float, margin: float = 0.0) -> float:
    """Exact power of Welch's test at true difference ``delta`` (not both sds zero).

    ``test`` "one": one-sided in the direction of ``delta``; "two": two-sided; "tost": both
    one-sided tests against ``margin`` (equivalence).
    """
    va, wa = _variances(sd_a, n_a)
    vb, wb = _variances(sd_b, n_b)
    ua, ub = va[:, None] / n_a, vb[None, :] / n_b
    se = np.sqrt(ua + ub)
    df = (ua + ub) ** 2 / (ua ** 2 / (n_a - 1) + ub ** 2 / (n_b - 1))
    spread = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)  # true sd of the difference of means
    bound = stats.t.ppf(1 - (alpha / 2 if test == "two" else alpha), df) * se
    if test == "one":
        hit = stats.norm.sf((bound - abs(delta)) / spread)
    elif test == "two":
        hit = stats.norm.sf((bound - delta) / spread) + stats.norm.cdf((-bound - delta) / spread)
    else:  # D must lie within margin - bound of zero
        hit = np.maximum(0.0, stats.norm.cdf((margin - bound - delta) / spread)
                         - stats.norm.cdf((bound - margin - delta) / spread))
    return float(np.sum(np.outer(wa, wb) * hit))


def power_one_sided(delta: float, sd_a: float, sd_b: float, n: int, alpha: float = ALPHA,
                    sides: int = 1) -> float:
    """Power of Welch's test with ``n`` seeds per arm at a true difference ``delta``.

    ``sides`` 1: one-sided in the direction of ``delta``; 2: two-sided.
    """
    if sd_a == 0 and sd_b == 0:  # no spread: the permutation test decides a nonzero
        return 1.0 if delta and flat_p(n, n) < alpha / sides else 0.0  # difference or never
    return _welch_power("one" if sides == 1 else "two", delta, sd_a, sd_b, n, n, alpha)


def power_equivalence(margin: float, sd_a: float, sd_b: float, n: int, delta: float = 0.0,
                      alpha: float = ALPHA) -> float:
    """Power of TOST with margin ``margin``, ``n`` seeds per arm, true difference ``delta``."""
    if sd_a == 0 and sd_b == 0:
        return 1.0 if abs(delta) < margin and flat_p(n, n) < alpha else 0.0
    return _welch_power("tost", delta, sd_a, sd_b, n, n, alpha, margin)


def seeds_needed(op: str, diff: float, sd_a: float, sd_b: float, margin: float | None = None,
                 alpha: float = ALPHA, power: float = POWER, sides: int = 1) -> int | None:
    """Seeds per arm that decide the claim with ``power``; None beyond MAX_SEEDS.

    ``>``/``<``: at true difference ``diff`` (``sides`` 2 gives the two-sided test, for
    comparison with published tables); ``~``: at true difference zero, margin ``margin``.
    """
    def enough(n: int) -> bool:
        if op == "~":
            return power_equivalence(margin, sd_a, sd_b, n, alpha=alpha) >= power
        return power_one_sided(diff, sd_a, sd_b, n, alpha, sides) >= power

    if not enough(MAX_SEEDS):
        return None
    lo, hi = MIN_SEEDS, MAX_SEEDS  # power grows with n: bisect for the first n that is enough
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def detectable(op: str, sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = ALPHA,
               power: float = POWER) -> float:
    """Smallest true difference (``~``: margin) the current seeds decide with ``power``.

    inf when no difference would do: arms without spread whose seeds are too few for the
    permutation test to reach alpha.
    """
    if sd_a == 0 and sd_b == 0:
        return 0.0 if flat_p(n_a, n_b) < alpha else math.inf
    if op == "~":
        def gap(m):
            return _welch_power("tost", 0.0, sd_a, sd_b, n_a, n_b, alpha, m) - power
    else:
        def gap(d):
            return _welch_power("one", d, sd_a, sd_b, n_a, n_b, alpha) - power
    se, df = _se_df(sd_a ** 2, sd_b ** 2, n_a, n_b)
    return float(optimize.brentq(gap, 0.0, 100 * se * (float(stats.t.ppf(1 - alpha, df)) + 10)))
