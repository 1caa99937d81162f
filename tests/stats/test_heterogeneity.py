"""Cochran's Q against statsmodels and a hand computation; the per-level relative lift against
the estimators it reuses."""

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects

from stats import AnalysisConfig, SampleStats, analyze_metric
from stats.fixed import t_quantile
from stats.heterogeneity import cochran_q, relative_lift


def test_q_by_hand():
    """y = (0.1, 0.3, 0.2), v = (0.01, 0.02, 0.015): w = (100, 50, 66.67), the pooled mean
    38.33 / 216.67 = 0.176923, Q = 100 (0.076923)^2 + 50 (0.123077)^2 + 66.67 (0.023077)^2 =
    1.384615; with 2 degrees of freedom the chi-square tail is exp(-Q / 2) = 0.500430."""
    test = cochran_q([0.1, 0.3, 0.2], [0.01, 0.02, 0.015])
    assert test.q == pytest.approx(1.384615, abs=1e-6)
    assert test.df == 2 and test.levels == 3
    assert test.pooled == pytest.approx(0.176923, abs=1e-6)
    assert test.p_value == pytest.approx(math.exp(-1.384615 / 2), abs=1e-6)
    assert test.p_value == pytest.approx(sps.chi2.sf(test.q, 2), rel=1e-12)
    assert test.i_squared == 0.0  # Q below its degrees of freedom: no spread beyond chance


@pytest.mark.parametrize("seed", range(5))
def test_q_matches_statsmodels_combine_effects(seed):
    """Q, its p-value, the fixed-effect mean and I^2 equal statsmodels' meta-analysis
    (combine_effects: q, test_homogeneity().pvalue, mean_effect_fe, i2 clipped at 0)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    y = rng.normal(0.05, 0.1, k)
    v = rng.uniform(0.0005, 0.01, k)
    ours = cochran_q(list(y), list(v))
    reference = combine_effects(y, v)
    assert ours.q == pytest.approx(reference.q, rel=1e-10)
    assert ours.df == reference.df_resid == k - 1
    assert ours.p_value == pytest.approx(reference.test_homogeneity().pvalue, rel=1e-10)
    assert ours.pooled == pytest.approx(reference.mean_effect_fe, rel=1e-10)
    assert ours.i_squared == pytest.approx(max(0.0, reference.i2), abs=1e-12)


def test_large_q_has_small_p_and_high_i_squared():
    """Clearly different effects: Q far above its degrees of freedom."""
    test = cochran_q([0.0, 0.5, -0.5], [0.001, 0.001, 0.001])
    assert test.q == pytest.approx(500.0)
    assert test.p_value < 1e-100
    assert test.i_squared == pytest.approx(1 - 2 / 500)


@pytest.mark.parametrize(
    "estimates, variances, used",
    [
        ([0.1], [0.01], 1),
        ([], [], 0),
        ([0.1, 0.2], [0.01, 0.0], 1),  # zero variance: left out
        ([0.1, float("nan"), 0.3], [0.01, 0.01, float("inf")], 1),
    ],
)
def test_fewer_than_two_usable_levels_give_no_test(estimates, variances, used):
    """Q needs two estimates with a positive finite variance; otherwise there is no p-value."""
    test = cochran_q(estimates, variances)
    assert test.q is None and test.p_value is None and test.i_squared is None
    assert test.levels == used


def binomial(n, conversions):
    return SampleStats(n=n, sum=conversions, sum_sq=conversions)


def test_relative_lift_is_the_log_risk_ratio_for_proportions():
    """For a binomial metric the per-level effect is the log risk ratio with its textbook
    variance (1 - p_t) / (n_t p_t) + (1 - p_c) / (n_c p_c) (Borenstein et al. 2009, ch. 5),
    and back on the relative scale it is the results' fixed-horizon view: exp(y) - 1 is the
    lift, and lift -/+ t (1 + lift) se is fixed_ci_low/high."""
    control, treatment = binomial(2000, 200), binomial(2100, 252)
    effect = relative_lift(control, treatment, "binomial")
    p_c, p_t = 0.1, 0.12
    assert effect.estimate == pytest.approx(math.log(p_t / p_c), rel=1e-12)
    log_rr_variance = (1 - p_t) / (2100 * p_t) + (1 - p_c) / (2000 * p_c)
    assert effect.variance == pytest.approx(log_rr_variance, rel=1e-12)
    result = analyze_metric(control, treatment, AnalysisConfig(kind="binomial", method="fixed"))
    lift = math.exp(effect.estimate) - 1
    assert result.lift_rel == pytest.approx(lift, rel=1e-12)
    width = t_quantile(0.025, effect.dof) * effect.se * (1 + lift)
    assert result.fixed_ci_low == pytest.approx(lift - width, rel=1e-12)
    assert result.fixed_ci_high == pytest.approx(lift + width, rel=1e-12)


def test_relative_lift_uses_cuped_as_the_results_do():
    """With CUPED the level's own pooled theta adjusts the means (as analyze_metric does):
    the estimate equals the results' CUPED lift_abs over the control mean."""
    control = SampleStats(
        n=500, sum=510.0, sum_sq=1500.0, cov_sum=480, cov_sum_sq=1400, cov_sum_prod=1300
    )
    treatment = SampleStats(
        n=500, sum=560.0, sum_sq=1700.0, cov_sum=470, cov_sum_sq=1380, cov_sum_prod=1350
    )
    effect = relative_lift(control, treatment, "mean", cuped=True)
    result = analyze_metric(
        control, treatment, AnalysisConfig(kind="mean", method="fixed", cuped=True)
    )
    assert result.cuped_variance_reduction and result.cuped_variance_reduction > 0
    assert math.exp(effect.estimate) - 1 == pytest.approx(result.lift_abs / (510 / 500), rel=1e-12)
    plain = relative_lift(control, treatment, "mean", cuped=False)
    assert plain.variance > effect.variance


@pytest.mark.parametrize(
    "control, treatment",
    [
        (binomial(1, 1), binomial(100, 10)),  # one unit in control
        (binomial(100, 0), binomial(100, 10)),  # control mean 0
        (binomial(100, 0), binomial(100, 0)),  # no variance
        (binomial(100, 10), binomial(100, 0)),  # no conversions in treatment: no log
    ],
)
def test_relative_lift_is_none_when_not_usable(control, treatment):
    assert relative_lift(control, treatment, "binomial") is None
