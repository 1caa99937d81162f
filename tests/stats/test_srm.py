"""Sample ratio mismatch: the always-valid Dirichlet-multinomial test (Lindon & Malek 2022) and
the classic chi-square kept for display, against scipy.stats.chisquare, gbstats check_srm,
scipy.stats.dirichlet_multinomial and a Monte Carlo under continuous monitoring."""

import math

import numpy as np
import pytest
from gbstats.utils import check_srm
from scipy import special, stats

from stats import SRM_P_THRESHOLD, srm_test
from stats.srm import SRM_PRIOR_STRENGTH, log_bayes_factor


def test_chi2_view_matches_scipy_chisquare_with_expected_counts_from_weights():
    """Reference: scipy.stats.chisquare([5050, 4840, 10110], f_exp = N x weights)."""
    observed, weights = [5050, 4840, 10110], [0.25, 0.25, 0.5]
    total = sum(observed)
    ref = stats.chisquare(observed, [total * w for w in weights])
    result = srm_test(observed, weights)
    assert result.chi2 == pytest.approx(ref.statistic, abs=1e-9)
    assert result.chi2_p_value == pytest.approx(ref.pvalue, abs=1e-9)


def test_chi2_view_matches_gbstats_check_srm_with_unnormalised_weights():
    """Reference: gbstats check_srm([1000, 1100], [1, 1])."""
    result = srm_test([1000, 1100], [1, 1])
    assert result.chi2_p_value == pytest.approx(check_srm([1000, 1100], [1, 1]), abs=1e-9)


def test_bayes_factor_matches_scipy_dirichlet_multinomial():
    """BF = DirMult(x; a = k p, n) / Mult(x; n, p), both pmfs from scipy."""
    for counts, weights in (([530, 470], [0.5, 0.5]), ([120, 95, 260], [0.25, 0.25, 0.5])):
        shares = np.array(weights) / sum(weights)
        n = sum(counts)
        ref = stats.dirichlet_multinomial.logpmf(
            counts, SRM_PRIOR_STRENGTH * shares, n
        ) - stats.multinomial.logpmf(counts, n, shares)
        assert log_bayes_factor(counts, shares) == pytest.approx(ref, rel=1e-10, abs=1e-10)
        assert srm_test(counts, weights).p_value == pytest.approx(min(1.0, math.exp(-ref)))


def test_bayes_factor_matches_numerical_integration_for_two_arms():
    """Two arms: BF = integral of Beta(theta; a1, a2) (theta / p)^x1 ((1-theta)/(1-p))^x2."""
    from scipy import integrate

    x1, x2, p = 60, 35, 0.5
    a1, a2 = SRM_PRIOR_STRENGTH * p, SRM_PRIOR_STRENGTH * (1 - p)

    def integrand(theta):
        log = (
            stats.beta.logpdf(theta, a1, a2)
            + x1 * math.log(theta / p)
            + x2 * math.log((1 - theta) / (1 - p))
        )
        return math.exp(log)

    ref, _ = integrate.quad(integrand, 0, 1, epsabs=0, epsrel=1e-12, limit=200)
    assert math.exp(log_bayes_factor([x1, x2], [p, 1 - p])) == pytest.approx(ref, rel=1e-8)


def test_flags_a_gross_mismatch_at_once_without_a_minimum_count():
    result = srm_test([19, 400], [0.5, 0.5])
    assert result.flagged and result.p_value < 1e-10 and "mismatch" in result.message


def test_balanced_split_is_not_flagged():
    result = srm_test([10000, 10050], [0.5, 0.5])
    assert not result.flagged and result.p_value == 1.0 and result.message is None


def test_power_a_52_48_split_of_50000_units_is_flagged():
    result = srm_test([26000, 24000], [0.5, 0.5])
    assert result.flagged and result.p_value < SRM_P_THRESHOLD


def test_counts_in_the_millions_do_not_overflow():
    result = srm_test([4_000_000, 4_020_000, 8_010_000], [1, 1, 2])
    assert result.p_value is not None and math.isfinite(result.p_value)
    balanced = srm_test([5_000_000, 5_000_100], [0.5, 0.5])
    assert balanced.p_value == 1.0 and not balanced.flagged


def test_units_in_a_zero_weight_arm_are_a_mismatch():
    result = srm_test([500, 500, 3], [0.5, 0.5, 0.0])
    assert result.flagged and result.p_value == 0.0
    assert "zero-weight" in result.message


def test_empty_zero_weight_arm_is_ignored():
    with_empty = srm_test([500, 530, 0], [0.5, 0.5, 0.0])
    assert with_empty.p_value == pytest.approx(srm_test([500, 530], [0.5, 0.5]).p_value)


def test_no_units_and_single_arm_give_a_clear_answer():
    assert srm_test([0, 0], [0.5, 0.5]).p_value == 1.0
    single = srm_test([100], [1.0])
    assert single.p_value is None and not single.flagged and single.message


def test_checked_at_every_look_the_false_alarm_rate_stays_below_the_threshold():
    """Monte Carlo under H0: 2,000 experiments with a 1:1:2 split, a look after every batch of
    50 units for 200 looks, flagged at always-valid p < 0.05. Ville's inequality bounds the
    share ever flagged by 0.05; the chi-square at p < 0.05 under the same peeking is not."""
    rng = np.random.default_rng(20220601)
    experiments, looks, batch, threshold = 2000, 200, 50, 0.05
    shares = np.array([0.25, 0.25, 0.5])
    counts = rng.multinomial(batch, shares, size=(experiments, looks)).cumsum(axis=1)
    a = SRM_PRIOR_STRENGTH * shares
    n = counts.sum(axis=2)
    log_bf = (
        special.gammaln(a + counts).sum(axis=2)
        - special.gammaln(a.sum() + n)
        - special.gammaln(a).sum()
        + special.gammaln(a.sum())
        - (counts * np.log(shares)).sum(axis=2)
    )
    ever_flagged = (log_bf > -math.log(threshold)).any(axis=1).mean()
    expected = n[..., None] * shares
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=2)
    chi2_ever = (stats.chi2.sf(chi2, 2) < threshold).any(axis=1).mean()
    mc_se = math.sqrt(threshold * (1 - threshold) / experiments)
    assert ever_flagged <= threshold + 3 * mc_se
    assert chi2_ever > 3 * threshold  # peeking at the fixed-horizon test: far above 5%
    # the vectorised Bayes factor is the one srm_test uses
    assert log_bf[0, -1] == pytest.approx(log_bayes_factor(counts[0, -1], shares), rel=1e-12)
