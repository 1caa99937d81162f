"""Sample size and MDE against statsmodels.stats.power.NormalIndPower (its ``ratio`` = n_t / n_c
for unequal splits), group-sequential inflation against ``inflation_factor``, binomial power
with an unequal split against a direct simulation, ramp-plan durations by hand."""

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower

from stats import (
    days_remaining,
    group_sequential,
    mde_for_sample,
    power_sample_size,
)
from stats.power import (
    LOOK_STEP,
    PIPELINE_LOOKS,
    InvalidInput,
    allocation_mde,
    allocation_sample_size,
    days_for_sample,
    gs_inflation,
    pair_sample_size,
)


def test_absolute_sample_size_matches_statsmodels():
    """Reference: NormalIndPower().solve_power(effect_size=0.5/4, alpha=0.05, power=0.8,
    ratio=1, alternative='two-sided'): an absolute MDE of 0.5 with sd 4."""
    ref = NormalIndPower().solve_power(effect_size=0.5 / 4, alpha=0.05, power=0.8, ratio=1)
    ours = power_sample_size(mde=0.5, baseline_mean=20.0, baseline_variance=16.0, relative=False)
    assert ours.per_arm_exact == pytest.approx(ref, abs=1e-5)
    assert ours.per_arm == math.ceil(ref) and ours.total == 2 * math.ceil(ref)


def test_absolute_mde_matches_statsmodels():
    """Reference: NormalIndPower().solve_power(nobs1=3000, alpha=0.01, power=0.9) x sd 4
    (its root finder stops at about 1e-7; its power() at our MDE is 0.9 to 1e-12)."""
    ref = NormalIndPower().solve_power(nobs1=3000, alpha=0.01, power=0.9, ratio=1) * 4.0
    ours = mde_for_sample(
        n_per_arm=3000,
        baseline_mean=20.0,
        baseline_variance=16.0,
        alpha=0.01,
        power=0.9,
        relative=False,
    )
    assert ours == pytest.approx(ref, abs=1e-6)
    assert NormalIndPower().power(effect_size=ours / 4.0, nobs1=3000, alpha=0.01) == pytest.approx(
        0.9, abs=1e-12
    )


def test_relative_binomial_sample_size_uses_the_delta_method_variance():
    """Reference: NormalIndPower with the effect size of the relative test,
    D / sqrt(V / 2), V = p_t (1 - p_t) + p (1 - p) (1 + mde)^2, D = mde p (see power.py)."""
    p, mde = 0.1, 0.05
    p_t = p * (1 + mde)
    v = p_t * (1 - p_t) + p * (1 - p) * (1 + mde) ** 2
    ref = NormalIndPower().solve_power(
        effect_size=mde * p / math.sqrt(v / 2), alpha=0.05, power=0.8
    )
    ours = power_sample_size(mde=mde, baseline_mean=p, kind="binomial")
    assert ours.per_arm_exact == pytest.approx(ref, abs=1e-5)
    assert mde_for_sample(n_per_arm=ref, baseline_mean=p, kind="binomial") == pytest.approx(
        mde, abs=1e-9
    )


def test_group_sequential_size_is_the_fixed_size_times_the_inflation_factor():
    # Explicit looks=5: the default is now the pipeline's 100 looks (see the next test).
    fixed = power_sample_size(mde=0.03, baseline_mean=10.0, baseline_variance=25.0)
    gs = power_sample_size(
        mde=0.03, baseline_mean=10.0, baseline_variance=25.0, design="group_sequential", looks=5
    )
    factor = group_sequential.inflation_factor((0.2, 0.4, 0.6, 0.8, 1.0))
    assert gs.inflation == pytest.approx(factor)
    assert gs.per_arm_exact == pytest.approx(fixed.per_arm_exact * factor)
    mde = mde_for_sample(
        n_per_arm=gs.per_arm_exact,
        baseline_mean=10.0,
        baseline_variance=25.0,
        design="group_sequential",
        looks=5,
    )
    assert mde == pytest.approx(0.03, rel=1e-8)


def cs_power_reference(n_c: float, *, mde: float, mean: float, variance: float) -> float:
    """The power of a two-sided confidence sequence on the relative lift, written out from
    docs/statistics.md alone (sections 3 and 9), tuned at its own N = 2 n_c: D = mde m,
    se^2 = (s^2 + s^2 (1 + mde)^2) / n_c, rho^2 = (-2 ln a + ln(1 - 2 ln a)) / N, half-width
    w = sqrt(se^2 N 2 (N rho^2 + 1) / (N rho)^2 ln(sqrt(N rho^2 + 1) / a)),
    power = Phi((D - w) / se) + Phi((-D - w) / se)."""
    a = 0.05
    big_n = 2.0 * n_c
    rho2 = (-2 * math.log(a) + math.log(1 - 2 * math.log(a))) / big_n
    se2 = (variance + variance * (1 + mde) ** 2) / n_c
    s2 = se2 * big_n
    w = math.sqrt(
        s2
        * 2
        * (big_n * rho2 + 1)
        / (big_n * big_n * rho2)
        * math.log(math.sqrt(big_n * rho2 + 1) / a)
    )
    d, se = mde * mean, math.sqrt(se2)
    return float(scipy_stats.norm.cdf((d - w) / se) + scipy_stats.norm.cdf((-d - w) / se))


def test_confidence_sequence_needs_more_units_and_reaches_the_power():
    """Reference: the sample size solved directly (scipy.optimize.brentq) from the documented
    half-width and power formulas, not from this module's own power()."""
    kwargs = dict(mde=0.03, baseline_mean=10.0, baseline_variance=25.0)
    cs = power_sample_size(**kwargs, design="sequential")
    gs = power_sample_size(**kwargs, design="group_sequential")
    assert cs.inflation > gs.inflation > 1.0
    reference = optimize.brentq(
        lambda n: cs_power_reference(n, mde=0.03, mean=10.0, variance=25.0) - 0.8,
        100.0,
        1e7,
        xtol=1e-9,
        rtol=1e-14,
    )
    assert cs.per_arm_exact == pytest.approx(reference, rel=1e-6)
    fixed = power_sample_size(**kwargs)
    assert cs.inflation == pytest.approx(reference / fixed.per_arm_exact, rel=1e-6)
    assert mde_for_sample(
        n_per_arm=cs.per_arm_exact, baseline_mean=10.0, baseline_variance=25.0, design="sequential"
    ) == pytest.approx(0.03, rel=1e-7)


def test_days_remaining_at_the_observed_rate():
    left = days_remaining(current_units=7000, required_units=20000, elapsed_days=7)
    assert left.units == 13000 and left.days == pytest.approx(13.0)
    assert days_remaining(current_units=0, required_units=10, elapsed_days=0).days is None
    assert days_remaining(current_units=50, required_units=10, elapsed_days=1).units == 0


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="baseline_variance"):
        power_sample_size(mde=0.1, baseline_mean=1.0)
    with pytest.raises(ValueError, match="non-zero baseline"):
        mde_for_sample(n_per_arm=100, baseline_mean=0.0, baseline_variance=1.0)


# --- unequal splits, several arms, the pipeline's looks, impossible inputs, ramp plans --------


@pytest.mark.parametrize("ratio", [1 / 9, 0.25, 3.0])
def test_unequal_split_matches_statsmodels_ratio(ratio):
    """Reference: NormalIndPower().solve_power(effect_size=0.5/4, ratio=n_t/n_c) gives the
    control arm's n (its nobs1); the treatment arm has ratio x nobs1."""
    ref = NormalIndPower().solve_power(effect_size=0.5 / 4, alpha=0.05, power=0.8, ratio=ratio)
    ours = pair_sample_size(
        mde=0.5, baseline_mean=20.0, baseline_variance=16.0, relative=False, ratio=ratio
    )
    assert ours.control_exact == pytest.approx(ref, rel=1e-6)
    assert ours.treatment_exact == pytest.approx(ref * ratio, rel=1e-6)
    back = mde_for_sample(
        n_per_arm=ref, baseline_mean=20.0, baseline_variance=16.0, relative=False, ratio=ratio
    )
    assert back == pytest.approx(0.5, rel=1e-6)


def test_ninety_ten_needs_about_2_8_times_the_units_of_fifty_fifty():
    """(1/0.9 + 1/0.1) / (1/0.5 + 1/0.5) = 2.78: the variance of the difference at a total N."""
    kwargs = dict(mde=0.5, baseline_mean=20.0, baseline_variance=16.0, relative=False)
    even = allocation_sample_size(weights=[0.5, 0.5], **kwargs)
    uneven = allocation_sample_size(weights=[0.9, 0.1], **kwargs)
    ratio = (1 / 0.9 + 1 / 0.1) / (1 / 0.5 + 1 / 0.5)
    assert ratio == pytest.approx(2.78, abs=0.005)
    assert uneven.total / even.total == pytest.approx(ratio, rel=1e-3)
    # Per arm, from statsmodels: nobs1 is the control (90%) at ratio 1/9.
    ref = NormalIndPower().solve_power(effect_size=0.5 / 4, alpha=0.05, power=0.8, ratio=1 / 9)
    assert uneven.arms_exact[0] == pytest.approx(ref, rel=1e-6)
    assert uneven.arms == (math.ceil(ref), math.ceil(ref / 9))
    assert uneven.total == sum(uneven.arms)


def test_k_arms_the_pair_that_needs_most_decides():
    """Control 0.2, treatments 0.5 and 0.3, alpha split over 2 treatments: the 0.3 arm's pair
    (ratio 1.5) needs the larger total. Reference: statsmodels nobs1 at each ratio, scaled to
    the total by 1 / w_c."""
    weights = [0.2, 0.5, 0.3]
    kwargs = dict(mde=0.5, baseline_mean=20.0, baseline_variance=16.0, relative=False)
    ours = allocation_sample_size(weights=weights, alpha=0.025, **kwargs)
    refs = [
        NormalIndPower().solve_power(effect_size=0.5 / 4, alpha=0.025, power=0.8, ratio=w / 0.2)
        / 0.2
        for w in weights[1:]
    ]
    assert ours.deciding == 2 and refs[1] > refs[0]
    assert sum(ours.arms_exact) == pytest.approx(refs[1], rel=1e-6)
    assert ours.arms_exact == pytest.approx(tuple(refs[1] * w for w in weights), rel=1e-6)
    # The MDE detected by that total is the MDE asked for (the deciding pair's).
    total = sum(ours.arms_exact)
    assert allocation_mde(
        total=total,
        weights=weights,
        alpha=0.025,
        baseline_mean=20.0,
        baseline_variance=16.0,
        relative=False,
    ) == pytest.approx(0.5, rel=1e-6)
    # The control may be any arm; even weights reproduce the equal-split function.
    even = allocation_sample_size(weights=[1, 1, 1], control=1, alpha=0.025, **kwargs)
    assert even.arms[0] == power_sample_size(alpha=0.025, **kwargs).per_arm


def test_binomial_unequal_split_reaches_the_power_in_simulation():
    """Direct simulation of the two-sample z-test on an absolute difference of conversion rates
    (10% -> 11%), 80/20 split, at the computed sizes, 200,000 experiments. With the true
    variances in the denominator the rejection rate is 0.80 within 4 Monte Carlo standard
    errors; with the estimated (unpooled) variances the analysis uses it is a little higher
    (0.805: the estimated variance grows with the observed rates), never lower."""
    ours = allocation_sample_size(
        weights=[0.8, 0.2], mde=0.01, baseline_mean=0.1, kind="binomial", relative=False
    )
    n_c, n_t = ours.arms
    rng = np.random.default_rng(20240601)
    reps = 200_000
    p_c = rng.binomial(n_c, 0.10, reps) / n_c
    p_t = rng.binomial(n_t, 0.11, reps) / n_t
    z_crit = 1.959963984540054
    known = (p_t - p_c) / math.sqrt(0.1 * 0.9 / n_c + 0.11 * 0.89 / n_t)
    rate = float(np.mean(np.abs(known) > z_crit))
    assert rate == pytest.approx(0.8, abs=4 * math.sqrt(0.16 / reps))
    plug_in = (p_t - p_c) / np.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    assert 0.8 - 0.004 < float(np.mean(np.abs(plug_in) > z_crit)) < 0.815


def test_the_default_is_the_pipelines_100_looks_and_matches_inflation_factor():
    """The pipeline counts a look per 1% of information (analysis.services.MIN_LOOK_STEP):
    100 equally spaced looks. The cached factor is group_sequential.inflation_factor's."""
    assert LOOK_STEP == 0.01 and PIPELINE_LOOKS == 100
    fractions = tuple((k + 1) / 100 for k in range(100))
    reference = group_sequential.inflation_factor(fractions, alpha=0.05, power=0.8)
    assert gs_inflation(100, 0.05, 0.8) == pytest.approx(reference, rel=1e-12)
    assert gs_inflation(fractions, 0.05, 0.8) == pytest.approx(reference, rel=1e-12)
    gs = power_sample_size(
        mde=0.03, baseline_mean=10.0, baseline_variance=25.0, design="group_sequential"
    )
    fixed = power_sample_size(mde=0.03, baseline_mean=10.0, baseline_variance=25.0)
    assert gs.inflation == pytest.approx(reference, rel=1e-12)
    assert gs.per_arm_exact == pytest.approx(fixed.per_arm_exact * reference)
    five = group_sequential.inflation_factor((0.2, 0.4, 0.6, 0.8, 1.0), alpha=0.05, power=0.8)
    assert reference > five  # more looks cost more units: 5 looks understated it


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (dict(baseline_mean=0.96, mde=0.05, kind="binomial"), "mde", "1.008"),
        (dict(baseline_mean=0.5, mde=-0.5, kind="binomial", relative=False), "mde", "outside"),
        (dict(baseline_mean=1.0, mde=0.05, kind="binomial"), "baseline_mean", "between 0 and 1"),
        (dict(baseline_mean=0.0, mde=0.05, kind="binomial"), "baseline_mean", "between 0 and 1"),
        (dict(baseline_mean=10, baseline_variance=0.0, mde=0.05), "baseline_variance", "positive"),
        (dict(baseline_mean=10, baseline_variance=-1, mde=0.05), "baseline_variance", "positive"),
        (dict(baseline_mean=10, baseline_variance=4, mde=0.05, alpha=1.2), "alpha", "alpha"),
        (dict(baseline_mean=10, baseline_variance=4, mde=0.05, power=1.0), "power", "power"),
        (dict(baseline_mean=10, baseline_variance=4, mde=0.0), "mde", "non-zero"),
        (
            dict(baseline_mean=10, baseline_variance=4, mde=0.05, weights=[1, 0]),
            "weights",
            "positive",
        ),
        (dict(baseline_mean=10, baseline_variance=4, mde=0.05, weights=[1]), "weights", "two"),
        (dict(baseline_mean=10, baseline_variance=4, mde=0.05, control=2), "control", "index"),
    ],
)
def test_impossible_inputs_name_the_argument(kwargs, field, message):
    """0.96 with +5% would need a 100.8% conversion rate: refused, not 145 units per arm."""
    kwargs = {"weights": [1, 1], **kwargs}
    with pytest.raises(InvalidInput, match=message) as caught:
        allocation_sample_size(**kwargs)
    assert caught.value.field == field


def test_days_for_sample_through_a_ramp_plan_by_hand():
    """240 units a day at full coverage = 10 an hour. Plan: 10% for 24 h (24 units), 50% for
    24 h (120 units, 144 in all), then 100%: 1,000 units need (1000 - 144) / 10 = 85.6 more
    hours, 24 + 24 + 85.6 = 133.6 h = 5.5667 days."""
    stages = [(0.1, 24), (0.5, 24), (1.0, 0)]
    assert days_for_sample(units=1000, daily_units=240, stages=stages) == pytest.approx(133.6 / 24)
    # Reached within the first stage: 10 units at 1 an hour.
    assert days_for_sample(units=10, daily_units=240, stages=stages) == pytest.approx(10 / 24)
    # Reached exactly at the end of stage 2.
    assert days_for_sample(units=144, daily_units=240, stages=stages) == pytest.approx(2.0)
    # The last stage's hours are no limit; it runs until the sample is reached.
    assert days_for_sample(units=1000, daily_units=240, stages=[(0.5, 1)]) == pytest.approx(
        1000 / 120
    )
    # No plan: constant coverage.
    assert days_for_sample(units=1000, daily_units=240, coverage=0.5) == pytest.approx(1000 / 120)
    with pytest.raises(InvalidInput) as caught:
        days_for_sample(units=10, daily_units=240, stages=[(0.0, 24), (1.0, 0)])
    assert caught.value.field == "stages"
    with pytest.raises(InvalidInput) as caught:
        days_for_sample(units=10, daily_units=0)
    assert caught.value.field == "daily_units"
