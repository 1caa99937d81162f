"""Lan-DeMets group-sequential bounds: published values and the exact joint normal.

Independent references: the published Lan-DeMets O'Brien-Fleming bounds for 5 equally spaced
looks at two-sided alpha 0.05 (4.877, 3.357, 2.680, 2.290, 2.031; the values R's gsDesign
gives with sfLDOF), and scipy.stats.multivariate_normal.cdf over the canonical joint
distribution Corr(Z_i, Z_j) = sqrt(t_i / t_j), which must give back the error spent.
"""

import math

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.stats import multivariate_normal

from stats import AnalysisConfig, SampleStats, analyze_metric
from stats import group_sequential as gs


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


def obf_spent(t: float, level: float) -> float:
    """Lan-DeMets O'Brien-Fleming, both sides (docs/statistics.md section 4): each side spends
    2 - 2 Phi(z_{1 - level/4} / sqrt(t))."""
    return 2 * (2 - 2 * stats.norm.cdf(stats.norm.isf(level / 4) / math.sqrt(min(t, 1.0))))


def reference_bounds(fractions, level: float) -> list[float]:
    """The two-sided bounds at ``level``, each solved (brentq) so that scipy's joint normal
    gives P(first crossing at look k) = alpha(t_k) - alpha(t_{k-1}); not the module's code."""
    bounds: list[float] = []
    for k, t in enumerate(fractions):
        target = obf_spent(t, level)
        bounds.append(
            optimize.brentq(
                lambda c, k=k, target=target: (
                    exit_probability(fractions[: k + 1], [*bounds, c]) - target
                ),
                0.1,
                40.0,
                xtol=1e-10,
            )
        )
    return bounds


def reference_repeated_p_value(z: float, fractions) -> float:
    """The level at which the last look's bound equals |z|: with the earlier bounds recomputed
    at that level, the crossing probability with |z| as the last bound (scipy's joint normal,
    Corr = sqrt(t_i / t_j)) is the alpha spent by the last look."""

    def excess(level: float) -> float:
        earlier = reference_bounds(fractions[:-1], level)
        return exit_probability(fractions, [*earlier, abs(z)]) - obf_spent(fractions[-1], level)

    return optimize.brentq(excess, 1e-6, 0.5, xtol=1e-12, rtol=1e-10)


def test_repeated_p_value_agrees_with_the_reference_bound_and_is_monotone():
    """The bound at 0.05 comes from scipy's joint normal (reference_bounds), not from
    efficacy_bounds: just above it the p-value is below 0.05, just below it above."""
    fractions = (0.3, 0.55, 0.7)
    bound = reference_bounds(fractions, 0.05)[-1]
    assert gs.repeated_p_value(bound + 1e-4, fractions) < 0.05
    assert gs.repeated_p_value(bound - 1e-4, fractions) > 0.05
    ps = [gs.repeated_p_value(z, fractions) for z in np.linspace(0, 6, 25)]
    assert all(a >= b for a, b in zip(ps, ps[1:], strict=False))
    assert ps[0] == 1.0


@pytest.mark.parametrize(
    ("fractions", "z"),
    [((0.5, 1.0), 2.1), ((0.5, 1.0), 2.9), ((0.25, 0.6, 1.0), 2.3), ((0.3, 0.55, 0.7), 3.2)],
)
def test_repeated_p_value_is_the_level_whose_bound_is_crossed(fractions, z):
    """Reference: with 2 or 3 looks, the level solved (brentq) so that the crossing probability
    by scipy.stats.multivariate_normal.cdf, at bounds recomputed at that level and |z| last,
    equals the alpha that level spends by the last look. Tolerance: 2e-6 in probability, the
    accuracy of scipy's integrator (docs/statistics.md, "Validation")."""
    expected = reference_repeated_p_value(z, fractions)
    assert gs.repeated_p_value(z, fractions) == pytest.approx(expected, rel=1e-4, abs=2e-6)
    assert gs.repeated_p_value(-z, fractions) == pytest.approx(expected, rel=1e-4, abs=2e-6)


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
    # (on the absolute difference, which decides; the relative interval is Fieller's)
    se = (result.ci_abs_high - result.ci_abs_low) / (2 * result.boundary_z)
    assert result.lift_abs == pytest.approx((result.ci_abs_low + result.ci_abs_high) / 2)
    assert result.ci_low < result.lift_rel < result.ci_high
    assert 1.96 * se < result.boundary_z * se
    assert result.significant == (result.p_value < 0.05)


def test_group_sequential_without_a_plan_uses_the_confidence_sequence():
    control, treatment = SampleStats(3000, 300, 300), SampleStats(3000, 360, 360)
    result = analyze_metric(
        control, treatment, AnalysisConfig(kind="binomial", method="group_sequential")
    )
    assert result.method == "sequential"
    assert result.p_value == result.cs_p_value
    assert "no planned sample" in result.message


# --- robustness of the bound solver ------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_tiny_first_looks_do_not_crash_the_solver():
    """Regression: a zero-width grid segment gave a 0/0 slope and brentq saw NaN."""
    fractions = (1.6e-05, 4.4e-05, 4.9e-05, 7e-05, 0.000215, 1.30221)
    bounds = gs.efficacy_bounds(fractions)
    assert not any(math.isnan(b) for b in bounds)
    assert all(b > 0 for b in bounds)
    # O'Brien-Fleming spends (almost) nothing that early: the last look is the fixed test
    assert bounds[-1] == pytest.approx(stats.norm.isf(0.025), abs=1e-6)


@st.composite
def look_sequences(draw):
    """Strictly increasing positive fractions: tiny (1e-9), crowded (gaps of 1e-7), above 1."""
    start = draw(st.sampled_from([1e-9, 1e-6, 1e-3, 0.05, 0.3]))
    count = draw(st.integers(1, 150))
    kinds = draw(
        st.lists(st.sampled_from(["crowd", "step", "jump"]), min_size=count, max_size=count)
    )
    out, t = [], start
    for kind in kinds:
        if t > 3.0:  # fractions above 1 included, but no runaway doubling
            break
        out.append(t)
        t = t + {"crowd": 1e-7 * max(t, 1e-3), "step": 1.0 / count, "jump": t}[kind]
    top = draw(st.sampled_from([1.0, 1.3, None]))
    if top is not None and out[-1] < top:
        out.append(top)
    return tuple(out)


@pytest.mark.slow  # a property test: the whole suite and CI run it, test-fast does not
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fractions=look_sequences(),
    alpha=st.sampled_from([1e-12, 1e-6, 0.001, 0.05, 0.5]),
    spending=st.sampled_from(["obrien_fleming", "power"]),
    two_sided=st.booleans(),
)
def test_bounds_never_nan_and_spend_exactly_the_allowed_error(
    fractions, alpha, spending, two_sided
):
    bounds = gs.efficacy_bounds(fractions, alpha, spending, 2.0, two_sided)
    assert len(bounds) == len(fractions)
    assert all(not math.isnan(b) and b > -math.inf for b in bounds)
    upper, lower = gs.crossing_probabilities(fractions, bounds, 0.0, two_sided)
    crossed = sum(upper) + sum(lower)
    allowed = gs.spent_alpha(fractions[-1], alpha, spending, 2.0, two_sided)
    # 2e-3 relative; at alpha 0.5 the last bound is near 0, where the grid's error is about
    # 1e-3 in absolute probability (0.50108 crossed for 0.5 allowed in one stored example).
    assert crossed == pytest.approx(allowed, rel=2e-3, abs=1e-13 if alpha < 0.5 else 2e-3)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fractions=look_sequences(), two_sided=st.booleans())
def test_last_bound_is_non_increasing_in_alpha(fractions, two_sided):
    last = [
        gs.efficacy_bounds(fractions, alpha, two_sided=two_sided)[-1]
        for alpha in (1e-12, 1e-6, 0.01, 0.05, 0.3)
    ]
    assert all(b <= a + 1e-9 for a, b in zip(last, last[1:], strict=False))


# --- repeated p-values -------------------------------------------------------------------------

HUNDRED = tuple(round(0.01 * i, 6) for i in range(1, 101))


@pytest.mark.slow  # a property test: the whole suite and CI run it, test-fast does not
def test_repeated_p_value_is_the_level_whose_bound_is_crossed_down_to_1e_15():
    """Against the direct computation: the level L such that efficacy_bounds(L)[-1] = z."""
    for level in (1e-15, 1e-10, 1e-6, 0.004, 0.05, 0.3, 0.5):
        z = gs.efficacy_bounds(HUNDRED, level)[-1]
        assert gs.repeated_p_value(z, HUNDRED) == pytest.approx(level, rel=1e-3)
    for level in (1e-12, 0.01, 0.2):
        z = gs.efficacy_bounds(HUNDRED, level, two_sided=False)[-1]
        assert gs.repeated_p_value(z, HUNDRED, two_sided=False) == pytest.approx(level, rel=1e-3)


@pytest.mark.parametrize("two_sided", [True, False])
@pytest.mark.parametrize("alpha", [1e-9, 0.001, 0.05])
def test_repeated_p_value_is_below_alpha_exactly_when_the_bound_is_crossed(alpha, two_sided):
    fractions = (0.2, 0.45, 0.6, 0.85)
    bound = gs.efficacy_bounds(fractions, alpha, two_sided=two_sided)[-1]
    for z in (bound, bound + 1e-12, bound + 0.1):
        assert gs.repeated_p_value(z, fractions, alpha, two_sided=two_sided) < alpha
    for z in (math.nextafter(bound, 0.0), bound - 1e-9, bound - 0.1):
        assert gs.repeated_p_value(z, fractions, alpha, two_sided=two_sided) >= alpha


def test_repeated_p_value_has_no_floor_and_is_zero_only_at_infinity():
    fractions = (0.3, 0.6, 1.0)
    ps = [gs.repeated_p_value(z, fractions) for z in (6.0, 8.0, 9.0, 12.0, 40.0)]
    assert all(0 < b < a for a, b in zip(ps, ps[1:], strict=False))
    assert ps[1] < 1e-14
    assert gs.repeated_p_value(math.inf, fractions) == 0.0
    assert gs.repeated_p_value(-2.0, fractions, two_sided=False) > 0.5


def test_repeated_p_value_for_100_looks_is_fast():
    """Uncached: the design at alpha plus two or three designs of the secant (about 1 s on
    2 cores); cached: the same statistic again is a dictionary look-up."""
    import time

    fractions = tuple(round(0.0099 * i, 6) for i in range(1, 101))
    start = time.perf_counter()
    p = gs.repeated_p_value(2.5, fractions, 0.05)
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert gs.repeated_p_value(2.5, fractions, 0.05) == p
    again = time.perf_counter() - start
    assert first < 4.0 and again < 0.01
