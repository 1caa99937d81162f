"""Sample size and MDE against statsmodels.stats.power.NormalIndPower."""

import math

import pytest
from statsmodels.stats.power import NormalIndPower

from analysis.stats import (
    days_remaining,
    group_sequential,
    mde_for_sample,
    power,
    power_sample_size,
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


def test_confidence_sequence_needs_more_units_and_reaches_the_power():
    kwargs = dict(mde=0.03, baseline_mean=10.0, baseline_variance=25.0)
    cs = power_sample_size(**kwargs, design="sequential")
    gs = power_sample_size(**kwargs, design="group_sequential")
    assert cs.inflation > gs.inflation > 1.0
    achieved = power(n_per_arm=cs.per_arm_exact, design="sequential", **kwargs)
    assert achieved == pytest.approx(0.8, abs=1e-8)
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
