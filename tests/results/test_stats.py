"""ablate.stats against numbers worked out by hand.

Two seeds per arm with the same spread (variance 2) make Welch's test have exactly 2 degrees of
freedom and a standard error of sqrt(2); Student's t with 2 df has a closed form, so every p
and interval below is computed without scipy.
"""

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.stats import nct, t, ttest_ind

from ablate import stats
from ablate.stats import AGREED, CONTRADICTED, UNDECIDED

SE = math.sqrt(2.0)
T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 97.5% quantile of t(2): 4.3027


def t2_sf(t: float) -> float:
    """P(T > t) for Student's t with 2 degrees of freedom."""
    return 0.5 - t / (2 * math.sqrt(2 + t * t))


LOW, HIGH, MID = [0.0, 2.0], [5.0, 7.0], [1.0, 3.0]  # means 1, 6, 2; variance 2 each


@pytest.mark.parametrize("op, arm, than, verdict, p", [
    (">", HIGH, LOW, AGREED, t2_sf(5 / SE)),         # 0.036: shown higher
    (">", LOW, HIGH, CONTRADICTED, t2_sf(5 / SE)),   # shown lower
    (">", MID, LOW, UNDECIDED, t2_sf(1 / SE)),       # 0.276: 1 point is within the noise
    ("<", LOW, HIGH, AGREED, t2_sf(5 / SE)),
    ("<", HIGH, LOW, CONTRADICTED, t2_sf(5 / SE)),
    ("<", LOW, MID, UNDECIDED, t2_sf(1 / SE)),
])
def test_directional_claims_by_one_sided_welch(op, arm, than, verdict, p):
    test = stats.claim_test(op, arm, than)
    assert min(test.p_agree, test.p_contra) == pytest.approx(p, rel=1e-6)
    assert test.p_agree + test.p_contra == pytest.approx(1.0)
    ((got, p_holm),) = stats.decide([test])
    assert got == verdict and p_holm == pytest.approx(p, rel=1e-6)


def test_confidence_interval_uses_welch_satterthwaite_df():
    test = stats.claim_test(">", HIGH, LOW)
    assert test.diff == pytest.approx(5.0)
    assert (test.ci_low, test.ci_high) == pytest.approx((5 - T975_DF2 * SE, 5 + T975_DF2 * SE))
    # unequal spreads and sizes: variance 1 (n 3) and 4 (n 2); df by Welch-Satterthwaite
    df = (1 / 3 + 2) ** 2 / ((1 / 3) ** 2 / 2 + 2 ** 2 / 1)
    low, high = stats.welch_ci(np.array([1.0, 2, 3]), np.array([0.0, 2 * math.sqrt(2)]))
    half = t.ppf(0.975, df) * math.sqrt(1 / 3 + 2)
    assert (low, high) == pytest.approx((2 - math.sqrt(2) - half, 2 - math.sqrt(2) + half))


@pytest.mark.parametrize("arm, margin, verdict, p_agree, p_contra", [
    (LOW, 5.0, AGREED, t2_sf(5 / SE), 1.0),  # diff 0: shown inside ±5
    ([20.0, 22.0], 5.0, CONTRADICTED, 1 - t2_sf(15 / SE), 2 * t2_sf(15 / SE)),  # diff 20
    # diff 10: "> 5" has p 0.036, but either side may contradict, each at alpha / 2
    ([10.0, 12.0], 5.0, UNDECIDED, 1 - t2_sf(5 / SE), 2 * t2_sf(5 / SE)),
    (HIGH, 5.0, UNDECIDED, 0.5, 1.0),                            # diff 5, on the margin
])
def test_about_equal_by_two_one_sided_tests(arm, margin, verdict, p_agree, p_contra):
    test = stats.claim_test("~", arm, LOW, margin)
    assert test.p_agree == pytest.approx(p_agree, rel=1e-6)
    assert test.p_contra == pytest.approx(p_contra, rel=1e-6, abs=1e-12)
    assert stats.decide([test])[0][0] == verdict


def test_about_equal_is_contradicted_at_most_alpha_of_the_time_when_true():
    # true difference 0, inside a margin small beside the noise: each side alone at alpha
    # would contradict the claim about 2 * alpha of the time
    rng = np.random.default_rng(0)
    verdicts = [stats.decide([stats.claim_test("~", rng.normal(0, 1, 5), rng.normal(0, 1, 5),
                                               0.01)])[0][0] for _ in range(1000)]
    assert verdicts.count(CONTRADICTED) / len(verdicts) < 0.065


def test_holm_adjusts_step_down_and_can_undo_a_verdict():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    shown, noise = stats.claim_test(">", HIGH, LOW), stats.claim_test(">", MID, LOW)
    assert stats.decide([shown])[0][0] == AGREED  # p 0.036 alone
    together = stats.decide([shown, noise])
    assert [v for v, _ in together] == [UNDECIDED, UNDECIDED]
    assert together[0][1] == pytest.approx(2 * t2_sf(5 / SE))  # 0.072 > 0.05
    assert stats.decide([shown, noise], alpha=0.1)[0][0] == AGREED


def _permutation_p(a, b, shift, greater):
    """One-sided permutation p by enumerating every split of the pooled values (a - shift, b)."""
    pooled = [x - shift for x in a] + list(b)
    observed = np.mean(a) - shift - np.mean(b)
    sign = 1 if greater else -1
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    as_extreme = 0
    for chosen in splits:
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        d = np.mean([pooled[i] for i in chosen]) - np.mean(rest)
        as_extreme += sign * d >= sign * observed - 1e-12
    return as_extreme / len(splits)


@pytest.mark.parametrize("a, b, shift", [
    ([1.0, 1.0, 1.0], [0.0, 0.0], 0.0),   # 3 vs 2: 1 of 10 splits
    ([0.0, 0.0], [1.0, 1.0, 1.0], 0.0),
    ([1.0] * 4, [0.0] * 4, 0.0),          # 4 vs 4: 1 of 70
    ([1.0, 1.0, 1.0], [0.0, 0.0], 0.5),   # against a margin: the shifted arms still differ
    ([1.0, 1.0, 1.0], [0.0, 0.0], 1.5),   # shifted past the other arm: the other direction
])
def test_arms_without_spread_get_the_exact_permutation_p(a, b, shift):
    for alternative in ("greater", "less"):
        expected = _permutation_p(a, b, shift, alternative == "greater")
        got = stats.one_sided_p(np.array(a), np.array(b), shift, alternative)
        assert got == pytest.approx(expected)
    assert min(stats.one_sided_p(np.array(a), np.array(b), shift, alt)
               for alt in ("greater", "less")) == pytest.approx(1 / math.comb(len(a) + len(b), len(a)))


def test_two_seeds_without_spread_never_decide_and_four_do():
    two = stats.claim_test(">", [51.0, 51.0], [50.0, 50.0])
    assert (two.p_agree, two.p_contra) == pytest.approx((1 / 6, 1.0))
    assert stats.decide([two])[0][0] == UNDECIDED
    four = stats.claim_test(">", [51.0] * 4, [50.0] * 4)
    assert stats.decide([four]) == [(AGREED, pytest.approx(1 / 70))]
    assert stats.decide([stats.claim_test("<", [51.0] * 4, [50.0] * 4)])[0][0] == CONTRADICTED
    assert stats.decide([stats.claim_test(">", [1.0] * 4, [1.0] * 4)])[0][0] == UNDECIDED
    # the report's test column names the rule that decided, not Welch's test (p nan there)
    assert two.test == "no spread in either arm: exact permutation test (>)"
    assert stats.claim_test("~", [1.0, 1.0], [1.0, 1.0], 0.5).test == \
        "no spread in either arm: exact permutation tests, margin ±0.5"
    assert stats.claim_test(">", [1.0, 3.0], [0.0, 0.0]).test == "Welch t, one-sided (>)"


def test_arms_of_one_repeated_value_have_no_spread_despite_rounding():
    # numpy's mean of [0.1] * 5 is 0.10000000000000002 and its variance of [0.1] * 3 is 2.9e-34:
    # read as a real spread, Welch's test would call 0.7 > 0.1 shown at p 1e-34, and two flat
    # arms of 0.1 would differ
    shown = stats.claim_test(">", [0.7] * 5, [0.1] * 3)
    assert shown.test.startswith("no spread") and shown.p_agree == pytest.approx(1 / 56)
    same = stats.claim_test(">", [0.1] * 5, [0.1] * 4)
    assert same.diff == 0.0 and (same.p_agree, same.p_contra) == (1.0, 1.0)
    assert stats.welch_ci(np.array([0.1] * 5), np.array([0.1] * 4)) == (0.0, 0.0)


def test_about_equal_without_spread_is_shown_inside_the_margin_at_enough_seeds():
    inside = stats.claim_test("~", [50.2] * 4, [50.0] * 4, 0.5)
    assert stats.decide([inside]) == [(AGREED, pytest.approx(1 / 70))]
    outside = stats.claim_test("~", [51.0] * 4, [50.0] * 4, 0.5)
    assert stats.decide([outside]) == [(CONTRADICTED, pytest.approx(2 / 70))]
    assert stats.decide([stats.claim_test("~", [50.2] * 2, [50.0] * 2, 0.5)])[0][0] == UNDECIDED


def test_seeds_and_detectable_difference_without_spread_follow_the_permutation_test():
    # p 1/C(2n, n) < alpha: 1/70 < 0.05 at n 4, but 1/70 > 0.01, 1/252 < 0.01 at n 5
    assert stats.seeds_needed(">", 1.0, 0.0, 0.0) == 4
    assert stats.seeds_needed(">", 1.0, 0.0, 0.0, alpha=0.01) == 5
    assert stats.seeds_needed(">", 0.0, 0.0, 0.0) is None
    assert stats.seeds_needed("~", 0.0, 0.0, 0.0, margin=0.5) == 4
    assert stats.detectable(">", 0.0, 0.0, 2, 2) == math.inf
    assert stats.detectable(">", 0.0, 0.0, 4, 4) == 0.0
    assert stats.detectable(">", 0.0, 0.0, 3, 2) == math.inf  # 1/10 > 0.05


def test_one_arm_without_spread_is_welch_with_the_other_arms_df_and_no_warning():
    # se = sqrt(var(a) / 3) = sqrt(1 / 3), df = 3 - 1: the flat arm adds nothing to either
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ttest_ind warns of cancellation here
        test = stats.claim_test(">", [1.0, 2.0, 3.0], [0.5, 0.5])
    assert test.p_agree == pytest.approx(t.sf(1.5 / math.sqrt(1 / 3), 2), rel=1e-9)
    assert test.test == "Welch t, one-sided (>)"


def test_a_claim_needs_two_values_per_arm_and_about_equal_a_margin():
    with pytest.raises(ValueError, match="at least 2"):
        stats.claim_test(">", [1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="margin"):
        stats.claim_test("~", LOW, LOW)


# Cohen (1988), Table 2.4.1 / G*Power: n per group for power 0.8 at alpha 0.05, sd 1.
@pytest.mark.parametrize("d, sides, n", [(0.5, 2, 64), (0.5, 1, 51), (0.8, 2, 26)])
def test_seeds_needed_matches_the_published_power_table(d, sides, n):
    assert stats.seeds_needed(">", d, 1.0, 1.0, sides=sides) == n
    assert stats.power_one_sided(d, 1.0, 1.0, n, sides=sides) >= 0.8
    assert stats.power_one_sided(d, 1.0, 1.0, n - 1, sides=sides) < 0.8


def _simulated_power(test, delta, sd_a, sd_b, n, margin=0.0, draws=100_000):
    """Fraction of simulated experiments (normal seeds) that Welch's test decides."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(delta, sd_a, (draws, n)), rng.normal(0.0, sd_b, (draws, n))
    with np.errstate(all="ignore"):  # scipy's ttest_ind, the reference, not ablate's own code
        if test == "tost":
            low = ttest_ind(a + margin, b, axis=1, equal_var=False, alternative="greater")
            high = ttest_ind(a - margin, b, axis=1, equal_var=False, alternative="less")
            return float(np.mean((low.pvalue < 0.05) & (high.pvalue < 0.05)))
        p = ttest_ind(a, b, axis=1, equal_var=False, alternative="greater").pvalue
    return float(np.mean(p < 0.05))


# at few seeds Welch's df are small and random: the noncentral t at the true spreads' df says
# 0.80 at 2 seeds per arm (first case), the test has 0.57
@pytest.mark.parametrize("delta, sd_a, sd_b, n", [(4.0, 1.0, 1.0, 2), (2.0, 1.0, 1.0, 4),
                                                 (3.0, 2.0, 1.0, 2), (8.0, 1.0, 3.0, 3),
                                                 (1.0, 1.0, 1.0, 14)])
def test_power_is_that_of_welchs_test_at_few_seeds(delta, sd_a, sd_b, n):
    # 100k draws: the simulated power's standard error is below 0.0016
    want = _simulated_power("one", delta, sd_a, sd_b, n)
    assert stats.power_one_sided(delta, sd_a, sd_b, n) == pytest.approx(want, abs=0.006)


def test_equivalence_power_is_that_of_the_two_one_sided_tests():
    want = _simulated_power("tost", 0.0, 1.0, 1.0, 4, margin=2.0)
    assert stats.power_equivalence(2.0, 1.0, 1.0, 4) == pytest.approx(want, abs=0.006)
    want = _simulated_power("tost", 0.5, 1.0, 2.0, 6, margin=2.0)
    assert stats.power_equivalence(2.0, 1.0, 2.0, 6, delta=0.5) == pytest.approx(want, abs=0.006)


def test_power_with_one_flat_arm_is_the_one_sample_noncentral_t():
    # the flat arm adds nothing: Welch's statistic is a one-sample t with n - 1 df, in closed form
    for n in (2, 3, 5, 20):
        exact = nct.sf(t.ppf(0.95, n - 1), n - 1, 1.5 * math.sqrt(n))
        assert stats.power_one_sided(1.5, 1.0, 0.0, n) == pytest.approx(exact, abs=1e-5)


def test_seeds_needed_at_few_seeds_reach_the_power_in_simulation():
    n = stats.seeds_needed(">", 4.0, 1.0, 1.0)
    assert n == 3  # not 2: two seeds per arm decide a 4-sd difference 57% of the time
    assert _simulated_power("one", 4.0, 1.0, 1.0, n) >= 0.8
    assert _simulated_power("one", 4.0, 1.0, 1.0, n - 1) < 0.8


def test_seeds_needed_for_equivalence_is_the_first_n_with_power():
    n = stats.seeds_needed("~", 0.0, 1.0, 1.0, margin=0.5)
    assert stats.power_equivalence(0.5, 1.0, 1.0, n) >= 0.8
    assert stats.power_equivalence(0.5, 1.0, 1.0, n - 1) < 0.8
    # a margin twice as wide needs about a quarter of the seeds
    assert stats.seeds_needed("~", 0.0, 1.0, 1.0, margin=1.0) == pytest.approx(n / 4, rel=0.15)


def test_no_seed_count_decides_a_zero_difference():
    assert stats.seeds_needed(">", 0.0, 1.0, 1.0) is None


def test_smallest_detectable_difference_has_the_target_power():
    d = stats.detectable(">", 1.0, 1.0, 64, 64)
    assert stats.power_one_sided(d, 1.0, 1.0, 64) == pytest.approx(0.8, abs=1e-6)
    assert stats.seeds_needed(">", d * 1.001, 1.0, 1.0) == 64
    m = stats.detectable("~", 1.0, 1.0, 30, 30)
    assert stats.power_equivalence(m, 1.0, 1.0, 30) == pytest.approx(0.8, abs=1e-6)
