"""Per-arm estimators and effects against gbstats (GrowthBook's engine, version 0.8.0).

Reference: gbstats.models.statistics (SampleMeanStatistic, ProportionStatistic, RatioStatistic,
RegressionAdjustedStatistic, compute_theta) and gbstats.frequentist.tests.TwoSidedTTest
(point_estimate, variance, dof), fed the same sums as ours. Agreement to 1e-9 relative.
"""

import numpy as np
import pytest
from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)

from stats.estimators import (
    SampleStats,
    absolute_effect,
    arm_estimate,
    cuped_arms,
    cuped_theta,
    relative_effect,
    sample_variance,
)

REL = 1e-9


def summarise(values, den=None, cov=None) -> SampleStats:
    values = np.asarray(values, dtype=float)
    den = np.zeros_like(values) if den is None else np.asarray(den, dtype=float)
    cov = np.zeros_like(values) if cov is None else np.asarray(cov, dtype=float)
    return SampleStats(
        n=len(values),
        sum=float(values.sum()),
        sum_sq=float((values**2).sum()),
        den_sum=float(den.sum()),
        den_sum_sq=float((den**2).sum()),
        sum_prod=float((values * den).sum()),
        cov_sum=float(cov.sum()),
        cov_sum_sq=float((cov**2).sum()),
        cov_sum_prod=float((values * cov).sum()),
    )


def gb_mean(s: SampleStats) -> SampleMeanStatistic:
    return SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_sq)


def gb_ratio(s: SampleStats) -> RatioStatistic:
    return RatioStatistic(
        n=s.n,
        m_statistic=SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_sq),
        d_statistic=SampleMeanStatistic(n=s.n, sum=s.den_sum, sum_squares=s.den_sum_sq),
        m_d_sum_of_products=s.sum_prod,
    )


def gb_cuped(s: SampleStats, binomial: bool = False) -> RegressionAdjustedStatistic:
    if binomial:
        post, pre = ProportionStatistic(n=s.n, sum=s.sum), ProportionStatistic(n=s.n, sum=s.cov_sum)
    else:
        post = SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_sq)
        pre = SampleMeanStatistic(n=s.n, sum=s.cov_sum, sum_squares=s.cov_sum_sq)
    return RegressionAdjustedStatistic(
        n=s.n,
        post_statistic=post,
        pre_statistic=pre,
        post_pre_sum_of_products=s.cov_sum_prod,
        theta=0,
    )


@pytest.fixture
def revenue():
    """Two arms of skewed per-unit revenue with a correlated pre-period covariate."""
    rng = np.random.default_rng(7)
    pre_c, pre_t = rng.gamma(2.0, 5.0, 800), rng.gamma(2.0, 5.0, 900)
    post_c = 0.6 * pre_c + rng.gamma(2.0, 3.0, 800)
    post_t = 0.6 * pre_t + rng.gamma(2.0, 3.3, 900)
    return summarise(post_c, cov=pre_c), summarise(post_t, cov=pre_t)


def test_sample_variance_matches_numpy_ddof_1():
    """Reference: numpy.var(ddof=1) on the raw values."""
    x = np.random.default_rng(1).normal(3, 2, 57)
    s = summarise(x)
    assert sample_variance(s.n, s.sum, s.sum_sq) == pytest.approx(np.var(x, ddof=1), rel=REL)


def test_mean_arm_matches_gbstats_sample_mean_statistic(revenue):
    control, _ = revenue
    arm = arm_estimate(control, "mean")
    ref = gb_mean(control)
    assert arm.mean == pytest.approx(ref.mean, rel=REL)
    assert arm.variance == pytest.approx(ref.variance, rel=REL)


def test_binomial_arm_matches_gbstats_proportion_statistic():
    s = SampleStats(n=1234, sum=157, sum_sq=157)
    arm = arm_estimate(s, "binomial")
    ref = ProportionStatistic(n=1234, sum=157)
    assert arm.mean == pytest.approx(ref.mean, rel=REL)
    assert arm.variance == pytest.approx(ref.variance, rel=REL)


def test_ratio_arm_matches_gbstats_ratio_statistic():
    """Revenue per session: numerator and denominator per unit, delta-method variance."""
    rng = np.random.default_rng(3)
    sessions = rng.poisson(3.0, 700) + 1
    revenue = sessions * rng.gamma(2.0, 4.0, 700)
    s = summarise(revenue, den=sessions)
    arm = arm_estimate(s, "ratio")
    ref = gb_ratio(s)
    assert arm.mean == pytest.approx(ref.mean, rel=REL)
    assert arm.variance == pytest.approx(ref.variance, rel=REL)


def test_cuped_theta_is_pooled_as_gbstats_compute_theta(revenue):
    control, treatment = revenue
    ref = compute_theta(gb_cuped(control), gb_cuped(treatment))
    assert cuped_theta(control, treatment, "mean") == pytest.approx(ref, rel=REL)


def test_cuped_arms_match_gbstats_regression_adjusted_statistic(revenue):
    control, treatment = revenue
    c, t, fit = cuped_arms(control, treatment, "mean")
    ref_c, ref_t = gb_cuped(control), gb_cuped(treatment)
    theta = compute_theta(ref_c, ref_t)
    ref_c.theta = ref_t.theta = theta
    assert fit.applied
    assert c.mean == pytest.approx(ref_c.mean, rel=REL)
    assert t.variance == pytest.approx(ref_t.variance, rel=REL)
    assert c.unadjusted_mean == pytest.approx(ref_c.unadjusted_mean, rel=REL)
    # the correlation here is about 0.7, so CUPED removes roughly half of the variance
    assert 0.3 < fit.variance_reduction < 0.7


def test_cuped_binomial_uses_proportion_statistics_like_gbstats():
    rng = np.random.default_rng(11)
    pre = rng.random(3000) < 0.2
    post = np.where(pre, rng.random(3000) < 0.5, rng.random(3000) < 0.1).astype(float)
    control, treatment = (
        summarise(post[:1500], cov=pre[:1500]),
        summarise(post[1500:], cov=pre[1500:]),
    )
    ref_c, ref_t = gb_cuped(control, True), gb_cuped(treatment, True)
    theta = compute_theta(ref_c, ref_t)
    ref_c.theta = ref_t.theta = theta
    c, t, fit = cuped_arms(control, treatment, "binomial")
    assert fit.theta == pytest.approx(theta, rel=REL)
    assert t.mean == pytest.approx(ref_t.mean, rel=REL)
    assert c.variance == pytest.approx(ref_c.variance, rel=REL)


def test_cuped_falls_back_when_the_covariate_is_constant(revenue):
    control, treatment = revenue
    flat_c = SampleStats(
        control.n,
        control.sum,
        control.sum_sq,
        cov_sum=control.n * 2.0,
        cov_sum_sq=control.n * 4.0,
        cov_sum_prod=2.0 * control.sum,
    )
    flat_t = SampleStats(
        treatment.n,
        treatment.sum,
        treatment.sum_sq,
        cov_sum=treatment.n * 2.0,
        cov_sum_sq=treatment.n * 4.0,
        cov_sum_prod=2.0 * treatment.sum,
    )
    c, t, fit = cuped_arms(flat_c, flat_t, "mean")
    assert not fit.applied and fit.variance_reduction == 0.0
    assert c == arm_estimate(flat_c, "mean") and t == arm_estimate(flat_t, "mean")


@pytest.mark.parametrize("difference_type", ["relative", "absolute"])
def test_effects_match_gbstats_ttest_moments(revenue, difference_type):
    control, treatment = revenue
    test = TwoSidedTTest(
        gb_mean(control), gb_mean(treatment), FrequentistConfig(difference_type=difference_type)
    )
    c, t = arm_estimate(control, "mean"), arm_estimate(treatment, "mean")
    effect = relative_effect(c, t) if difference_type == "relative" else absolute_effect(c, t)
    assert effect.estimate == pytest.approx(test.point_estimate, rel=REL)
    assert effect.variance == pytest.approx(test.variance, rel=REL)
    assert effect.dof == pytest.approx(test.dof, rel=REL)


def test_relative_effect_is_none_when_the_control_mean_is_zero():
    zero = arm_estimate(SampleStats(n=100, sum=0, sum_sq=0), "binomial")
    some = arm_estimate(SampleStats(n=100, sum=5, sum_sq=5), "binomial")
    assert relative_effect(zero, some) is None
    assert absolute_effect(zero, some).estimate == pytest.approx(0.05)
