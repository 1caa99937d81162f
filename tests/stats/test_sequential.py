"""Confidence sequences against gbstats' sequential tests on the same inputs.

Two-sided reference: gbstats 0.8.0 SequentialTwoSidedTTest with SequentialConfig
(sequential_tuning_parameter = our tuning_n). One-sided reference: GrowthBook's newer
SequentialOneSidedTreatment{Greater,Lesser}TTest (not in the installed 0.8.0), transcribed
below: rho tuned at 2 alpha, half-width sqrt(s2 2 (N rho^2 + 1) / (N rho)^2
log(1 + sqrt(N rho^2 + 1) / (2 alpha))), p-value by bisection on alpha with rho held fixed.
"""

import math

import numpy as np
import pytest
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic
from hypothesis import given, settings
from hypothesis import strategies as st

from stats import AnalysisConfig, SampleStats, analyze_metric, sequential
from stats.estimators import arm_estimate, relative_effect

from .test_estimators import gb_cuped, gb_mean, gb_ratio, summarise

DEC = 1e-6
ABSOLUTE = SequentialConfig(difference_type="absolute")


@pytest.fixture
def arms():
    rng = np.random.default_rng(31)
    return summarise(rng.gamma(2.0, 5.0, 2500)), summarise(rng.gamma(2.0, 5.3, 2600))


@pytest.mark.parametrize("tuning_n", [5000, 20000])
def test_relative_sequence_matches_gbstats(arms, tuning_n):
    """Reference: SequentialTwoSidedTTest(SampleMeanStatistic x2), relative, tuning 5000 / 20000."""
    control, treatment = arms
    ref = SequentialTwoSidedTTest(
        gb_mean(control), gb_mean(treatment), SequentialConfig(sequential_tuning_parameter=tuning_n)
    ).compute_result()
    result = analyze_metric(control, treatment, AnalysisConfig(tuning_n=tuning_n))
    ref_abs = SequentialTwoSidedTTest(
        gb_mean(control),
        gb_mean(treatment),
        SequentialConfig(sequential_tuning_parameter=tuning_n, difference_type="absolute"),
    ).compute_result()
    assert result.method == "sequential"
    assert (result.cs_ci_low, result.cs_ci_high) == pytest.approx(tuple(ref.ci), abs=DEC)
    # Decisions and p-values are on the absolute difference (each tail holds its level).
    assert result.p_value == pytest.approx(ref_abs.p_value, abs=DEC)


def test_absolute_sequence_matches_gbstats(arms):
    """Reference: SequentialTwoSidedTTest, difference_type absolute, alpha 0.01."""
    control, treatment = arms
    config = SequentialConfig(difference_type="absolute", alpha=0.01)
    ref = SequentialTwoSidedTTest(gb_mean(control), gb_mean(treatment), config).compute_result()
    result = analyze_metric(control, treatment, AnalysisConfig(alpha=0.01))
    assert (result.ci_abs_low, result.ci_abs_high) == pytest.approx(tuple(ref.ci), abs=DEC)


def test_binomial_sequence_matches_gbstats():
    """Reference: SequentialTwoSidedTTest(ProportionStatistic x2): 410/4000 vs 480/4100."""
    control, treatment = SampleStats(4000, 410, 410), SampleStats(4100, 480, 480)
    gb_arms = ProportionStatistic(n=4000, sum=410), ProportionStatistic(n=4100, sum=480)
    ref = SequentialTwoSidedTTest(*gb_arms).compute_result()
    ref_abs = SequentialTwoSidedTTest(*gb_arms, ABSOLUTE).compute_result()
    result = analyze_metric(control, treatment, AnalysisConfig(kind="binomial"))
    assert (result.cs_ci_low, result.cs_ci_high) == pytest.approx(tuple(ref.ci), abs=DEC)
    assert result.p_value == pytest.approx(ref_abs.p_value, abs=DEC)


def test_ratio_sequence_matches_gbstats():
    """Reference: SequentialTwoSidedTTest(RatioStatistic x2), revenue per session."""
    rng = np.random.default_rng(17)
    stats_ = []
    for scale in (4.0, 4.6):
        sessions = rng.poisson(2.0, 3000) + 1
        stats_.append(summarise(sessions * rng.gamma(2.0, scale, 3000), den=sessions))
    control, treatment = stats_
    ref = SequentialTwoSidedTTest(gb_ratio(control), gb_ratio(treatment)).compute_result()
    ref_abs = SequentialTwoSidedTTest(gb_ratio(control), gb_ratio(treatment), ABSOLUTE)
    result = analyze_metric(control, treatment, AnalysisConfig(kind="ratio"))
    assert (result.cs_ci_low, result.cs_ci_high) == pytest.approx(tuple(ref.ci), abs=DEC)
    assert result.p_value == pytest.approx(ref_abs.compute_result().p_value, abs=DEC)


def test_cuped_sequence_matches_gbstats():
    """Reference: SequentialTwoSidedTTest(RegressionAdjustedStatistic x2), pooled theta."""
    rng = np.random.default_rng(23)
    pre_c, pre_t = rng.gamma(2.0, 5.0, 2000), rng.gamma(2.0, 5.0, 2000)
    control = summarise(0.8 * pre_c + rng.normal(4.0, 3.0, 2000), cov=pre_c)
    treatment = summarise(0.8 * pre_t + rng.normal(4.5, 3.0, 2000), cov=pre_t)
    ref = SequentialTwoSidedTTest(gb_cuped(control), gb_cuped(treatment)).compute_result()
    ref_abs = SequentialTwoSidedTTest(gb_cuped(control), gb_cuped(treatment), ABSOLUTE)
    result = analyze_metric(control, treatment, AnalysisConfig(cuped=True))
    assert (result.cs_ci_low, result.cs_ci_high) == pytest.approx(tuple(ref.ci), abs=DEC)
    assert result.p_value == pytest.approx(ref_abs.compute_result().p_value, abs=DEC)


def _gb_one_sided_halfwidth(s2, n, tuning, alpha, rho=None):
    if rho is None:
        a = 2 * alpha
        rho = math.sqrt((-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / tuning)
    return math.sqrt(
        s2
        * (2 * (n * rho**2 + 1))
        / (n * rho) ** 2
        * math.log(1 + math.sqrt(n * rho**2 + 1) / (2 * alpha))
    )


def _gb_one_sided_p(estimate, variance, n, tuning, alpha, greater):
    """gbstats' bisection for the level at which the one-sided bound touches 0."""
    a = 2 * alpha
    rho = math.sqrt((-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / tuning)
    lo, hi = 1e-12, 0.4999
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        width = _gb_one_sided_halfwidth(variance * n, n, tuning, mid, rho)
        bound = estimate - width if greater else estimate + width
        crossed = bound > 0 if greater else bound < 0
        lo, hi = (lo, mid) if crossed else (mid, hi)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("greater", [True, False])
def test_one_sided_sequence_matches_gbstats_transcription(arms, greater):
    control, treatment = arms
    if not greater:
        control, treatment = treatment, control
    c, t = arm_estimate(control, "mean"), arm_estimate(treatment, "mean")
    effect = relative_effect(c, t)
    n = control.n + treatment.n
    ours = float(sequential.halfwidth(effect.variance, n, 0.05, 5000, two_sided=False))
    assert ours == pytest.approx(
        _gb_one_sided_halfwidth(effect.variance * n, n, 5000, 0.05), abs=1e-9
    )
    p = float(
        sequential.p_value_one_sided(effect.estimate, effect.variance, n, 0.05, 5000, greater)
    )
    ref = _gb_one_sided_p(effect.estimate, effect.variance, n, 5000, 0.05, greater)
    assert 1e-5 < ref < 0.4999  # inside the range where gbstats' search answers
    assert p == pytest.approx(ref, abs=DEC)


def test_one_sided_p_value_is_one_on_the_wrong_side():
    assert float(sequential.p_value_one_sided(-0.1, 0.001, 1000, 0.05, greater=True)) == 1.0
    assert float(sequential.p_value_one_sided(0.1, 0.001, 1000, 0.05, greater=False)) == 1.0


def test_sequence_is_wider_than_the_fixed_interval(arms):
    result = analyze_metric(*arms, AnalysisConfig())
    assert result.cs_ci_low < result.fixed_ci_low < result.fixed_ci_high < result.cs_ci_high


@settings(max_examples=60, deadline=None)
@given(
    estimate=st.floats(-1, 1),
    variance=st.floats(1e-6, 1e-2),
    n=st.integers(10, 10**6),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_p_value_below_alpha_exactly_when_the_sequence_excludes_zero(estimate, variance, n, alpha):
    """The e-value p-value (eq. 155) and the boundary (eq. 9) are the same inequality."""
    width = float(sequential.halfwidth(variance, n, alpha))
    p = float(sequential.p_value(estimate, variance, n, alpha))
    if abs(abs(estimate) - width) > 1e-9 * max(width, 1e-12):
        assert (p < alpha) == (abs(estimate) > width)
