"""The decision policy: the error budget split, which snapshots are looks, and evaluate()."""

import pytest

from analysis.policy import (
    ALPHA_SRM,
    COLLECTING,
    FINAL,
    FROZEN,
    LOOK,
    MetricDef,
    Plan,
    evaluate,
    look_status,
)
from stats import SampleStats

GUARDS = [MetricDef(f"g{i}", "binomial", "guardrail", margin=0.05) for i in range(3)]
PRIMARY = MetricDef("conv", "binomial", "primary")


def plan(**kw):
    defaults = dict(
        alpha=0.05,
        weights={"control": 1.0, "a": 1.0, "b": 1.0},
        control="control",
        metrics=[PRIMARY, *GUARDS],
        planned=30000,
    )
    return Plan(**{**defaults, **kw})


def test_the_rollback_budget_is_split_over_guardrails_primaries_and_arms():
    p = plan()
    good, bad = p.levels(PRIMARY)
    assert good == pytest.approx(0.05 / 2 / 1 / 2)  # two-sided alpha / (P K) per tail
    assert bad == pytest.approx((0.05 - ALPHA_SRM) / (4 * 2))
    g_good, g_bad = p.levels(GUARDS[0])
    assert g_good == 0.05 and g_bad == bad  # non-inferiority is an intersection-union test
    # The union bound: SRM plus every harm test adds up to alpha.
    harm_tests = (1 + 3) * 2
    assert ALPHA_SRM + harm_tests * bad == pytest.approx(0.05)


def test_no_decision_before_every_arm_has_its_minimum():
    status = look_status(plan(), {"control": 500, "a": 500, "b": 99}, {})
    assert status.kind == COLLECTING and not status.acts
    assert "before a first decision" in status.message and status.units_needed >= 300


def test_a_look_is_counted_per_step_of_information_and_snapshots_between_store_nothing():
    p = plan()
    first = look_status(p, {"control": 1000, "a": 1000, "b": 1000}, {})
    assert first.kind == LOOK and first.looks == {"a": [0.1], "b": [0.1]}
    between = look_status(p, {"control": 1040, "a": 1040, "b": 1040}, first.looks)
    assert between.kind == "between" and not between.stored and not between.acts
    assert "next look is at 11%" in between.message
    second = look_status(p, {"control": 1100, "a": 1100, "b": 1100}, first.looks)
    assert second.kind == LOOK and second.looks["a"] == [0.1, 0.11]


def test_running_past_the_plan_freezes_the_final_decision():
    p = plan()
    final = look_status(p, {"control": 10100, "a": 10100, "b": 10100}, {"a": [0.5], "b": [0.5]})
    assert final.kind == FINAL and final.looks["a"] == [0.5, 1.01]
    later = look_status(p, {"control": 15000, "a": 15000, "b": 15000}, final.looks)
    assert later.kind == FROZEN and not later.acts and not later.stored


def test_without_a_plan_every_snapshot_past_collecting_is_a_look():
    status = look_status(plan(planned=None), {"control": 150, "a": 150, "b": 150}, {})
    assert status.kind == LOOK and status.acts


def test_an_errored_metric_is_reported_and_the_others_still_decide():
    p = plan(metrics=[PRIMARY, GUARDS[0]], weights={"control": 1.0, "a": 1.0}, planned=None)
    stats = {
        "conv": {"control": SampleStats(5000, 500, 500), "a": SampleStats(5000, 700, 700)},
    }
    ev = evaluate(
        p,
        stats,
        {"control": 5000, "a": 5000},
        {},
        errors={"g0": "the sums overflow"},
    )
    conv = next(c for c in ev.comparisons if c.metric.key == "conv")
    g0 = next(c for c in ev.comparisons if c.metric.key == "g0")
    assert conv.result.improved and g0.error == "the sums overflow"
    assert ev.decision.action == "extend"  # a guardrail that cannot be judged blocks "keep"
    assert any("could not be computed" in r for r in ev.decision.reasons)
