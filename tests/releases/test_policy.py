"""The release decision (releases/policy.py), pure: levels, the harm side by direction, the
tolerated margin, holds (time, units, mismatched split, pause), advance and complete."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from releases.policy import (
    ADVANCE,
    COMPLETE,
    HOLD,
    ROLLBACK,
    MeanArms,
    MetricSpec,
    Plan,
    QuantileArms,
    Step,
    StepData,
    check_metric,
    decide,
)
from stats import sequential
from stats.estimators import SampleStats
from stats.quantiles import arm_quantile

ERRORS = MetricSpec("errors", "binomial", direction="decrease")
CONVERSION = MetricSpec("conversion", "binomial", direction="increase")
PLAN = Plan(0.05, (Step(10, 5, 200), Step(50, 5, 200), Step(100, 5, 200)), (ERRORS, CONVERSION))


def _binomial(n: int, k: int) -> SampleStats:
    return SampleStats(n, float(k), float(k))


def _data(base=(5000, 250), new=(5000, 250), conv=((5000, 500), (5000, 500)), minutes=10.0,
          units=None):  # fmt: skip
    units = units or (base[0], new[0])
    return StepData(minutes, units[0], units[1], 0, {
        "errors": MeanArms(_binomial(*base), _binomial(*new)),
        "conversion": MeanArms(_binomial(*conv[0]), _binomial(*conv[1])),
    })  # fmt: skip


def test_each_test_gets_alpha_over_steps_times_metrics():
    assert PLAN.level == pytest.approx(0.05 / 6)


def test_the_bound_is_the_one_sided_confidence_sequence():
    """lower = d - halfwidth(Var(d), N, level, one-sided), with Var(d) the sum of the arms'
    p(1-p)/n."""
    base, new = _binomial(4000, 200), _binomial(4000, 260)
    check = check_metric(ERRORS, MeanArms(base, new), 8000, 0.01, 1000)
    p0, p1 = 200 / 4000, 260 / 4000
    var = p0 * (1 - p0) / 4000 + p1 * (1 - p1) / 4000
    half = float(sequential.halfwidth(var, 8000, 0.01, 1000, two_sided=False))
    assert check.difference == pytest.approx(p1 - p0)
    assert check.lower == pytest.approx(p1 - p0 - half)
    assert check.harmed == (p1 - p0 - half > 0)


def test_the_confidence_sequence_is_wider_than_the_fixed_horizon_bound():
    base, new = _binomial(4000, 200), _binomial(4000, 260)
    check = check_metric(ERRORS, MeanArms(base, new), 8000, 0.01, 1000)
    se = math.sqrt(0.05 * 0.95 / 4000 + 0.065 * 0.935 / 4000)
    assert check.difference - check.lower > sps.norm.ppf(0.99) * se


def test_more_errors_roll_back_and_fewer_do_not():
    assert decide(PLAN, 1, _data(new=(5000, 400))).action == ROLLBACK
    assert decide(PLAN, 1, _data(new=(5000, 150))).action == ADVANCE


def test_lower_conversion_rolls_back_higher_does_not():
    worse = _data(conv=((5000, 500), (5000, 380)))
    better = _data(conv=((5000, 500), (5000, 620)))
    assert decide(PLAN, 1, worse).action == ROLLBACK
    assert decide(PLAN, 1, better).action == ADVANCE


def test_a_margin_tolerates_harm_up_to_it():
    harmed = _data(new=(20000, 1300), base=(20000, 1000))  # +30% errors
    tolerant = Plan(0.05, PLAN.steps, (MetricSpec("errors", "binomial", direction="decrease",
                                                  margin=0.5), CONVERSION))  # fmt: skip
    assert decide(PLAN, 1, harmed).action == ROLLBACK
    assert decide(tolerant, 1, harmed).action == ADVANCE


def test_holds_until_the_steps_minimums_and_says_what_for():
    early = decide(PLAN, 1, _data(minutes=2))
    assert early.action == HOLD and "3.0 more minutes" in early.waits_for[0]
    few = decide(PLAN, 1, _data(base=(150, 8), new=(150, 8), conv=((150, 15), (150, 15))))
    assert few.action == HOLD
    assert any("more units on the new variation" in w for w in few.waits_for)


def test_a_mismatched_split_holds_without_rollback():
    data = _data(units=(5000, 3000))  # 10% step: 3000 new of 8000 is far from 10%
    decision = decide(PLAN, 0, data)
    assert decision.action == HOLD and "Sample-ratio mismatch" in decision.reasons[0]
    assert decision.srm_p_value < 0.001


def test_paused_holds_but_still_rolls_back_on_harm():
    units = (45000, 5000)
    assert decide(PLAN, 0, _data(units=units), paused=True).action == HOLD
    harmed = _data(new=(5000, 400), units=units)
    assert decide(PLAN, 0, harmed, paused=True).action == ROLLBACK


def test_advances_then_completes_after_the_last_step():
    units = (45000, 5000)
    assert decide(PLAN, 0, _data(units=units)).action == ADVANCE
    assert decide(PLAN, 2, _data()).action == COMPLETE


def test_quantile_harm_uses_the_woodruff_standard_errors():
    rng = np.random.default_rng(3)
    base = arm_quantile(rng.lognormal(4.6, 0.5, 4000), 0.95)
    new = arm_quantile(1.3 * rng.lognormal(4.6, 0.5, 4000), 0.95)
    spec = MetricSpec("p95", "quantile", direction="decrease", quantile=0.95)
    check = check_metric(spec, QuantileArms(base, new), 8000, 0.01, 1000)
    var = base.se**2 + new.se**2
    half = float(sequential.halfwidth(var, 8000, 0.01, 1000, two_sided=False))
    assert check.lower == pytest.approx(new.estimate - base.estimate - half)
    assert check.harmed


def test_a_metric_without_data_holds_and_names_itself():
    data = StepData(10, 5000, 5000, 0, {"errors": "too few values in the new"})
    decision = decide(Plan(0.05, PLAN.steps, (ERRORS,)), 1, data)
    assert decision.action == HOLD and decision.waits_for == ("errors: too few values in the new",)
