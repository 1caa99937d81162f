"""analyze_metric: decisions, directions, margins and edge cases that must never raise or NaN."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stats import AnalysisConfig, MetricResult, SampleStats, analyze_metric

from .test_estimators import summarise


def assert_clean(result: MetricResult) -> None:
    """Every float is finite or None; flags are booleans."""
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), f.name
    assert isinstance(result.significant, bool)


def binomial(n, conversions):
    return SampleStats(n, conversions, conversions)


def test_zero_conversions_in_control_gives_no_relative_lift_but_an_absolute_test():
    result = analyze_metric(binomial(1000, 0), binomial(1000, 30), AnalysisConfig(kind="binomial"))
    assert_clean(result)
    assert result.lift_rel is None and result.ci_low is None
    assert result.message and "relative lift undefined" in result.message
    assert result.lift_abs == pytest.approx(0.03) and result.ci_abs_low is not None


def test_zero_conversions_in_treatment_is_detected_as_harm():
    """A broken checkout (no conversions at all) must be flagged, not hidden as 'no variance'."""
    result = analyze_metric(binomial(2000, 200), binomial(2000, 0), AnalysisConfig(kind="binomial"))
    assert_clean(result)
    assert result.lift_rel == pytest.approx(-1.0)
    assert result.harmed and not result.improved
    assert result.ci_high < 0


def test_zero_conversions_everywhere_is_no_test():
    result = analyze_metric(binomial(500, 0), binomial(500, 0), AnalysisConfig(kind="binomial"))
    assert_clean(result)
    assert result.p_value is None and not result.significant
    assert "relative lift undefined" in result.message and "zero variance" in result.message


def test_constant_values_are_no_test():
    result = analyze_metric(SampleStats(10, 30, 90), SampleStats(12, 36, 108), AnalysisConfig())
    assert_clean(result)
    assert result.lift_rel == 0.0 and result.p_value is None
    assert "zero variance" in result.message


def test_one_unit_in_an_arm_shows_means_but_no_test():
    result = analyze_metric(SampleStats(1, 5.0, 25.0), summarise([1.0, 2.0, 4.0]), AnalysisConfig())
    assert_clean(result)
    assert result.control_mean == 5.0 and result.lift_abs is not None
    assert result.p_value is None and "fewer than 2 units" in result.message


@pytest.mark.parametrize("method", ["sequential", "group_sequential", "fixed"])
def test_missing_arms_give_a_clear_result(method):
    config = AnalysisConfig(method=method, planned_n=1000)
    empty = SampleStats(0, 0.0, 0.0)
    for control, treatment, text in (
        (empty, summarise([1.0, 2.0]), "no units in control"),
        (summarise([1.0, 2.0]), empty, "no units in treatment"),
        (empty, empty, "no units in control and treatment"),
    ):
        result = analyze_metric(control, treatment, config)
        assert_clean(result)
        assert result.message.startswith(text) and result.p_value is None


def test_zero_control_mean_with_variance_tests_the_absolute_difference():
    control = summarise([-1.0, 1.0] * 50)
    treatment = summarise([-0.5, 1.5] * 50)
    result = analyze_metric(control, treatment, AnalysisConfig(method="fixed"))
    assert_clean(result)
    assert (
        result.lift_rel is None and result.message == "control mean is 0: relative lift undefined"
    )
    assert result.lift_abs == pytest.approx(0.5) and result.significant and result.improved


def test_decrease_metrics_improve_when_they_fall():
    control, treatment = binomial(20000, 2000), binomial(20000, 1700)
    result = analyze_metric(
        control, treatment, AnalysisConfig(kind="binomial", direction="decrease")
    )
    assert result.significant and result.improved and not result.harmed


def test_non_inferiority_uses_the_one_sided_bound_against_the_margin():
    """Equal rates with plenty of data: inside a 5% margin, not inside a 0.1% one."""
    control, treatment = binomial(100000, 10000), binomial(100000, 10010)
    wide = analyze_metric(control, treatment, AnalysisConfig(kind="binomial", margin=0.05))
    tight = analyze_metric(control, treatment, AnalysisConfig(kind="binomial", margin=0.001))
    assert wide.non_inferior is True and tight.non_inferior is False
    # the one-sided bound is tighter than the two-sided sequence on the harmful side
    assert wide.cs_ci_low > -0.05


def test_cuped_reports_no_reduction_without_a_covariate():
    rng = np.random.default_rng(4)
    control, treatment = summarise(rng.normal(5, 1, 300)), summarise(rng.normal(5.2, 1, 300))
    result = analyze_metric(control, treatment, AnalysisConfig(cuped=True))
    assert result.cuped_variance_reduction == 0.0 and "CUPED" in result.message
    plain = analyze_metric(control, treatment, AnalysisConfig())
    assert result.ci_low == plain.ci_low


def test_cuped_is_not_applied_to_ratio_metrics():
    rng = np.random.default_rng(6)
    den = rng.poisson(2, 400) + 1.0
    arm = summarise(den * 3.0 + rng.normal(0, 1, 400), den=den)
    result = analyze_metric(arm, arm, AnalysisConfig(kind="ratio", cuped=True))
    assert result.cuped_variance_reduction is None and "ratio" in result.message


def test_invalid_configuration_raises():
    for bad in (
        dict(kind="median"),
        dict(method="bayes"),
        dict(alpha=1.5),
        dict(direction="up"),
        dict(spending="pocock"),
    ):
        with pytest.raises(ValueError):
            AnalysisConfig(**bad)


values = st.lists(st.floats(-50, 1000, allow_nan=False), min_size=0, max_size=40)


@st.composite
def arm(draw, kind):
    if kind == "binomial":
        n = draw(st.integers(0, 5000))
        conversions = draw(st.integers(0, n))
        return binomial(n, conversions)
    x = draw(values)
    den = [abs(v) % 5 for v in x] if kind == "ratio" else None
    cov = draw(st.lists(st.floats(0, 100), min_size=len(x), max_size=len(x)))
    return summarise(x, den=den, cov=cov)


@st.composite
def case(draw):
    kind = draw(st.sampled_from(["binomial", "mean", "count", "ratio"]))
    config = AnalysisConfig(
        kind=kind,
        method=draw(st.sampled_from(["sequential", "group_sequential", "fixed"])),
        planned_n=draw(st.sampled_from([None, 100, 5000])),
        previous_fractions=draw(st.sampled_from([(), (0.5,)])),
        cuped=draw(st.booleans()),
        margin=draw(st.sampled_from([None, 0.02])),
        prior_sd=draw(st.sampled_from([None, 0.1])),
        direction=draw(st.sampled_from(["increase", "decrease"])),
    )
    return draw(arm(kind)), draw(arm(kind)), config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case())
def test_never_raises_and_never_returns_nan(data):
    control, treatment, config = data
    result = analyze_metric(control, treatment, config)
    assert_clean(result)
    if result.p_value is not None:
        assert 0.0 <= result.p_value <= 1.0
        assert result.significant == (result.p_value < config.alpha)
    assert not (result.improved and result.harmed)
    for low, high in (
        (result.ci_low, result.ci_high),
        (result.cs_ci_low, result.cs_ci_high),
        (result.fixed_ci_low, result.fixed_ci_high),
    ):
        assert (low is None) == (high is None)
        if low is not None:
            assert low <= high


def test_non_inferiority_under_group_sequential_uses_the_one_sided_design():
    from stats import group_sequential as gs

    control, treatment = binomial(50000, 5000), binomial(50000, 5005)
    config = AnalysisConfig(
        kind="binomial",
        method="group_sequential",
        planned_n=200000,
        margin=0.05,
        alpha_good=0.05,  # non-inferiority is an intersection-union test at full alpha
        alpha_bad=0.01,
    )
    result = analyze_metric(control, treatment, config)
    one_sided = gs.efficacy_bounds((0.5,), 0.05, two_sided=False)[-1]
    two_sided = gs.efficacy_bounds((0.5,), 0.05)[-1]
    assert result.boundary_z == pytest.approx(one_sided) and one_sided < two_sided
    assert result.bound_bad_z == pytest.approx(
        gs.efficacy_bounds((0.5,), 0.01, two_sided=False)[-1]
    )
    assert result.non_inferior is True
