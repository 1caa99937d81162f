"""The deciding interval: absolute-difference decisions with calibrated tails, Fieller's relative
interval consistent with them, one-sided levels per side, and honest edge cases."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from stats import AnalysisConfig, SampleStats, analyze_metric
from stats.analyze import fieller_interval
from stats.estimators import arm_estimate, relative_effect
from stats.fixed import t_test


def binomial(n, conversions):
    return SampleStats(n, conversions, conversions)


def _brute_force_fieller(a, b, var_a, var_b, cov, k):
    """Independent reference: the ends of {r : |a - r b| <= k sd(a - r b)} found by root
    finding on each side of a / b (scipy.optimize.brentq)."""

    def excess(r):
        return (a - r * b) ** 2 - k * k * (var_a - 2 * r * cov + r * r * var_b)

    centre = a / b
    step = 1.0
    while excess(centre - step) < 0:
        step *= 2
    low = optimize.brentq(excess, centre - step, centre, xtol=1e-14)
    step = 1.0
    while excess(centre + step) < 0:
        step *= 2
    high = optimize.brentq(excess, centre, centre + step, xtol=1e-14)
    return low, high


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(-5, 5),
    b=st.floats(0.5, 20),
    sa=st.floats(0.01, 2),
    sb=st.floats(0.01, 0.2),
    corr=st.floats(-0.9, 0.9),
    k=st.floats(0.5, 4),
)
def test_fieller_interval_matches_a_brute_force_inversion(a, b, sa, sb, corr, k):
    var_a, var_b, cov = sa * sa, sb * sb, corr * sa * sb
    low, high = fieller_interval(a, b, var_a, var_b, cov, k, k)
    if b * b <= k * k * var_b * 1.0001:  # the set is unbounded (or nearly): no interval
        assert low is None or b * b > k * k * var_b
        return
    ref = _brute_force_fieller(a, b, var_a, var_b, cov, k)
    assert (low, high) == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_fieller_interval_is_unbounded_when_the_denominator_is_not_distinguishable_from_zero():
    assert fieller_interval(1.0, 0.1, 0.01, 0.01, 0.0, 1.96, 1.96) == (None, None)


@settings(max_examples=150, deadline=None)
@given(
    pc=st.floats(0.005, 0.6),
    pt=st.floats(0.005, 0.6),
    n=st.integers(200, 20000),
    method=st.sampled_from(["fixed", "sequential", "group_sequential"]),
)
def test_the_relative_interval_excludes_zero_exactly_when_the_absolute_test_rejects(
    pc, pt, n, method
):
    control, treatment = binomial(n, round(pc * n)), binomial(n, round(pt * n))
    config = AnalysisConfig(kind="binomial", method=method, planned_n=4 * n)
    r = analyze_metric(control, treatment, config)
    if r.ci_low is None or r.ci_high is None or r.ci_abs_low is None:
        return
    assert (r.ci_low > 0) == (r.ci_abs_low > 0)
    assert (r.ci_high < 0) == (r.ci_abs_high < 0)
    assert r.ci_low <= r.lift_rel <= r.ci_high


def test_each_tail_holds_its_level_at_a_one_percent_base_rate():
    """The measured defect: fixed test, 1% conversion, 2,000 units per arm, A/A. The delta-method
    relative test gave false "harmed" 6.3% and false "improved" 0.01% (each should be 2.5%).
    The absolute test's tails are equal by exchangeability of the arms under no effect."""
    rng = np.random.default_rng(11)
    sims, n, p = 8000, 2000, 0.01
    conv = rng.binomial(n, p, size=(sims, 2))
    harmed = improved = rel_harmed = rel_improved = 0
    config = AnalysisConfig(kind="binomial", method="fixed")
    for c, t in conv:
        control, treatment = binomial(n, int(c)), binomial(n, int(t))
        r = analyze_metric(control, treatment, config)
        harmed += r.harmed
        improved += r.improved
        effect = relative_effect(
            arm_estimate(control, "binomial"), arm_estimate(treatment, "binomial")
        )
        if effect is not None and effect.usable:
            test = t_test(effect, 0.05)
            rel_harmed += test.high < 0
            rel_improved += test.low > 0
    se = math.sqrt(0.025 * 0.975 / sims)
    # The old relative test really was lopsided (reproduces the defect).
    assert rel_harmed / sims > 0.045 and rel_improved / sims < 0.005
    for rate in (harmed / sims, improved / sims):
        assert abs(rate - 0.025) < 4 * se + 0.004, (
            rate
        )  # 0.004: the normal approximation at 20 events
    assert abs(harmed - improved) / sims < 5 * math.sqrt(2 * 0.025 / sims)


def test_asymmetric_levels_use_one_sided_multipliers():
    rng = np.random.default_rng(3)
    c, t = rng.normal(10, 2, 3000), rng.normal(10.1, 2, 3000)
    control = SampleStats(3000, c.sum(), (c**2).sum())
    treatment = SampleStats(3000, t.sum(), (t**2).sum())
    config = AnalysisConfig(method="fixed", alpha_good=0.01, alpha_bad=0.002)
    r = analyze_metric(control, treatment, config)
    se = math.sqrt(c.var(ddof=1) / 3000 + t.var(ddof=1) / 3000)
    dof = r.lift_abs and 5997.9  # Welch dof is ~n1 + n2 - 2 for equal variances
    assert r.ci_abs_low == pytest.approx(r.lift_abs - stats.t.isf(0.01, dof) * se, rel=1e-3)
    assert r.ci_abs_high == pytest.approx(r.lift_abs + stats.t.isf(0.002, dof) * se, rel=1e-3)
    down = analyze_metric(
        control,
        treatment,
        AnalysisConfig(method="fixed", alpha_good=0.01, alpha_bad=0.002, direction="decrease"),
    )
    assert down.ci_abs_low == pytest.approx(r.lift_abs - stats.t.isf(0.002, dof) * se, rel=1e-3)


def test_a_negative_control_mean_keeps_the_sign_of_the_change():
    """Profit per user of -10 in control and -8 in treatment is an improvement of +20%."""
    rng = np.random.default_rng(5)
    c, t = rng.normal(-10, 2, 4000), rng.normal(-8, 2, 4000)
    control = SampleStats(4000, c.sum(), (c**2).sum())
    treatment = SampleStats(4000, t.sum(), (t**2).sum())
    r = analyze_metric(control, treatment, AnalysisConfig(method="fixed"))
    assert r.lift_rel == pytest.approx(0.2, abs=0.01)
    assert r.improved and not r.harmed and r.ci_low > 0


def test_a_zero_control_denominator_is_an_error_not_an_improvement():
    """The measured defect: a ratio metric whose control has no denominator gave 'improved'
    with p = 7e-4."""
    control = SampleStats(500, 0.0, 0.0, den_sum=0.0, den_sum_sq=0.0, sum_prod=0.0)
    treatment = SampleStats(500, 300.0, 500.0, den_sum=400.0, den_sum_sq=600.0, sum_prod=500.0)
    r = analyze_metric(control, treatment, AnalysisConfig(kind="ratio"))
    assert r.error and "denominator is 0" in r.error
    assert not r.significant and r.p_value is None


def test_more_conversions_than_units_is_an_error_not_harm():
    r = analyze_metric(binomial(100, 150), binomial(100, 10), AnalysisConfig(kind="binomial"))
    assert r.error and "150 conversions among 100 units" in r.error
    assert not r.harmed and r.p_value is None


def test_non_finite_sums_are_an_error_not_zero_variance():
    control = SampleStats(100, float("nan"), float("nan"))
    r = analyze_metric(control, SampleStats(100, 50.0, 60.0), AnalysisConfig())
    assert r.error and "not finite" in r.error
    assert r.message is None or "zero variance" not in r.message
