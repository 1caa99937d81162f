"""Lan-DeMets group-sequential bounds: published values and the exact joint normal.

Independent references: the published Lan-DeMets O'Brien-Fleming bounds for 5 equally spaced
looks at two-sided alpha 0.05 (4.877, 3.357, 2.680, 2.290, 2.031; the values R's gsDesign
gives with sfLDOF), and scipy.stats.multivariate_normal.cdf over the canonical joint
distribution Corr(Z_i, Z_j) = sqrt(t_i / t_j), which must give back the error spent.
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.stats import multivariate_normal

from analysis.stats import AnalysisConfig, SampleStats, analyze_metric
from analysis.stats import group_sequential as gs


def exit_probability(fractions, bounds, drift=0.0, two_sided=True):
    """1 - P(no bound crossed at any look) by scipy's multivariate normal CDF (Genz)."""
    t = np.asarray(fractions, dtype=float)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    upper = np.asarray(bounds, dtype=float)
    lower = -upper if two_sided else np.full_like(upper, -np.inf)
    inside = multivariate_normal.cdf(
        upper,
        mean=drift * np.sqrt(t),
        cov=cov,
        lower_limit=lower,
        abseps=1e-9,
        releps=1e-9,
        maxpts=1_000_000,
        rng=np.random.default_rng(0),
    )
    return 1.0 - inside


def test_obrien_fleming_bounds_match_the_published_values():
    bounds = gs.efficacy_bounds([0.2, 0.4, 0.6, 0.8, 1.0], alpha=0.05)
    assert [round(b, 3) for b in bounds] == [4.877, 3.357, 2.680, 2.290, 2.031]


@pytest.mark.parametrize(
    ("fractions", "spending", "rho", "two_sided"),
    [
        ((0.2, 0.4, 0.6, 0.8, 1.0), "obrien_fleming", 2.0, True),
        ((0.13, 0.5, 0.55, 1.0), "obrien_fleming", 2.0, True),
        ((0.15, 0.45, 0.7, 1.0), "power", 2.0, True),
        ((0.3, 0.31, 0.9), "power", 1.0, True),
        ((0.25, 0.6, 1.0), "obrien_fleming", 2.0, False),
    ],
)
def test_bounds_spend_exactly_the_allowed_error_under_the_joint_normal(
    fractions, spending, rho, two_sided
):
    """At every look k, P(some bound crossed by look k | H0) = alpha(t_k), computed by
    scipy's multivariate normal CDF: unequally spaced and unplanned looks included."""
    alpha = 0.05
    bounds = gs.efficacy_bounds(fractions, alpha, spending, rho, two_sided)
    for k in range(1, len(fractions) + 1):
        spent = exit_probability(fractions[:k], bounds[:k], two_sided=two_sided)
        allowed = gs.spent_alpha(fractions[k - 1], alpha, spending, rho, two_sided)
        assert spent == pytest.approx(allowed, abs=2e-6)


def test_crossing_probabilities_under_drift_match_the_joint_normal():
    """Power-side recursion (drift theta: E[Z_k] = theta sqrt(t_k)) against scipy."""
    fractions = (0.25, 0.5, 0.8, 1.0)
    bounds = gs.efficacy_bounds(fractions)
    upper, lower = gs.crossing_probabilities(fractions, bounds, drift=2.5)
    assert sum(upper) + sum(lower) == pytest.approx(
        exit_probability(fractions, bounds, drift=2.5), abs=2e-6
    )


def test_inflation_factor_gives_the_target_power():
    """At the inflated sample the design's power, by scipy's joint normal, is 80%."""
    fractions = (0.2, 0.4, 0.6, 0.8, 1.0)
    factor = gs.inflation_factor(fractions, alpha=0.05, power=0.8)
    assert 1.0 < factor < 1.05  # O'Brien-Fleming designs cost little sample
    drift = (stats.norm.isf(0.025) + stats.norm.ppf(0.8)) * math.sqrt(factor)
    assert exit_probability(fractions, gs.efficacy_bounds(fractions), drift) == pytest.approx(
        0.8, abs=1e-5
    )


def test_single_look_at_the_end_is_the_fixed_test():
    for spending in gs.SPENDING_FUNCTIONS:
        (bound,) = gs.efficacy_bounds([1.0], 0.05, spending)
        assert bound == pytest.approx(stats.norm.isf(0.025), abs=1e-12)
        assert gs.repeated_p_value(2.3, [1.0], 0.05, spending) == pytest.approx(
            2 * stats.norm.sf(2.3), rel=1e-9
        )


def test_repeated_p_value_agrees_with_the_bound_and_is_monotone():
    fractions = (0.3, 0.55, 0.7)
    bound = gs.efficacy_bounds(fractions, 0.05)[-1]
    assert gs.repeated_p_value(bound + 1e-6, fractions) < 0.05
    assert gs.repeated_p_value(bound - 1e-6, fractions) > 0.05
    ps = [gs.repeated_p_value(z, fractions) for z in np.linspace(0, 6, 25)]
    assert all(a >= b for a, b in zip(ps, ps[1:], strict=False))
    assert ps[0] == 1.0


def test_repeated_p_value_matches_the_level_whose_bound_is_crossed():
    fractions = (0.2, 0.4, 0.6, 0.8, 1.0)
    for level in (0.003, 0.02, 0.2):
        z = gs.efficacy_bounds(fractions, level)[-1]
        assert gs.repeated_p_value(z, fractions) == pytest.approx(level, rel=2e-3)


def test_look_fractions_drop_repeats_and_treat_an_overrun_as_the_final_look():
    assert gs.look_fractions((0.2, 0.5, 0.5, 0.8), 0.5) == (0.2, 0.5)
    assert gs.look_fractions((0.4, 0.2), 0.9) == (0.2, 0.4, 0.9)
    assert gs.look_fractions((0.5, 1.05), 1.2) == (0.5, 1.2)
    bounds = gs.efficacy_bounds(gs.look_fractions((0.5, 1.05), 1.2))
    assert math.isfinite(bounds[-1])


def test_spending_functions_are_cumulative_and_reach_alpha():
    for spending in gs.SPENDING_FUNCTIONS:
        values = [gs.spent_alpha(t, 0.05, spending) for t in np.linspace(0, 1.5, 16)]
        assert values[0] == 0 and all(a <= b for a, b in zip(values, values[1:], strict=False))
        assert gs.spent_alpha(1.0, 0.05, spending) == pytest.approx(0.05)


def test_analyze_metric_uses_the_bound_for_this_look():
    control, treatment = SampleStats(3000, 300, 300), SampleStats(3000, 360, 360)
    config = AnalysisConfig(
        kind="binomial", method="group_sequential", planned_n=10000, previous_fractions=(0.3,)
    )
    result = analyze_metric(control, treatment, config)
    assert result.method == "group_sequential"
    assert result.information_fraction == pytest.approx(0.6)
    assert result.boundary_z == pytest.approx(gs.efficacy_bounds((0.3, 0.6))[-1])
    # the repeated CI is the estimate -/+ bound x se; it is wider than the fixed one
    se = (result.ci_high - result.ci_low) / (2 * result.boundary_z)
    assert result.lift_rel == pytest.approx((result.ci_low + result.ci_high) / 2)
    assert (result.fixed_ci_high - result.fixed_ci_low) / 2 < result.boundary_z * se
    assert result.significant == (result.p_value < 0.05)


def test_group_sequential_without_a_plan_uses_the_confidence_sequence():
    control, treatment = SampleStats(3000, 300, 300), SampleStats(3000, 360, 360)
    result = analyze_metric(
        control, treatment, AnalysisConfig(kind="binomial", method="group_sequential")
    )
    assert result.method == "sequential"
    assert result.p_value == result.cs_p_value
    assert "no planned sample" in result.message
