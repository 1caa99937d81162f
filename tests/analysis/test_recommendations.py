"""Every branch of the pure rules: health checks, per-arm and experiment decisions, wording."""

import math

import pytest

from analysis.recommendations import (
    DEFAULT_MDE,
    Decision,
    Extension,
    MetricOutcome,
    check_empty_arms,
    check_empty_metric,
    check_multi_exposure,
    check_no_exposures,
    check_pre_exposure_imbalance,
    check_srm,
    decide_arm,
    decide_experiment,
    estimate_extension,
    metric_status,
)
from stats import SampleStats, days_remaining, power_sample_size


def outcome(role="primary", **kw) -> MetricOutcome:
    values = dict(
        metric=f"{role}-metric",
        role=role,
        variant="treatment",
        lift_rel=0.0,
        ci_low=-0.05,
        ci_high=0.05,
        improved=False,
        harmed=False,
        non_inferior=None,
        name="",
        direction="increase",
        margin=None,
        alpha=0.05,
    )
    values.update(kw)
    return MetricOutcome(**values)


WIN = dict(lift_rel=0.08, ci_low=0.02, ci_high=0.14, improved=True)
HARM = dict(lift_rel=-0.1, ci_low=-0.16, ci_high=-0.04, harmed=True)
SAFE_GUARDRAIL = dict(non_inferior=True, margin=0.05)
OPEN_GUARDRAIL = dict(non_inferior=False, margin=0.05, lift_rel=-0.01, ci_low=-0.09)


# --- health checks ---


def test_srm_flags_a_lopsided_split():
    finding = check_srm([1000, 800], [0.5, 0.5])
    assert finding.unhealthy and finding.check == "srm" and finding.value < 0.001
    assert "Sample ratio mismatch" in finding.message


def test_srm_accepts_the_configured_split():
    assert check_srm([1000, 980], [0.5, 0.5]).severity == "ok"


@pytest.mark.parametrize(
    "single,multi,severity",
    [(1000, 5, "ok"), (1000, 20, "warning"), (100, 101, "unhealthy"), (0, 0, "ok")],
)
def test_multi_exposure_thresholds(single, multi, severity):
    """Above 1% of exposed units a warning; most of them (> 50%) is unhealthy."""
    finding = check_multi_exposure(single, multi)
    assert finding.severity == severity
    if severity != "ok":
        assert "more than one variant" in finding.message


def test_no_exposures_is_a_warning():
    assert check_no_exposures(0).severity == "warning"
    assert "No exposures yet" in check_no_exposures(0).message
    assert check_no_exposures(3).severity == "ok"


def test_an_arm_expecting_many_units_but_getting_none_is_unhealthy():
    weights = {"control": 0.5, "treatment": 0.5}
    assert check_empty_arms({"control": 300, "treatment": 0}, weights).unhealthy
    assert check_empty_arms({"control": 40, "treatment": 0}, weights).severity == "info"
    assert check_empty_arms({"control": 40, "treatment": 38}, weights).severity == "ok"
    assert check_empty_arms({}, weights).severity == "ok"


def test_a_metric_silent_in_one_arm_is_a_warning():
    finding = check_empty_metric("Purchase", {"control": (100, 12.0), "treatment": (100, 0.0)})
    assert finding.severity == "warning" and "'treatment'" in finding.message
    assert check_empty_metric("Purchase", {"control": (5, 0.0), "b": (5, 0.0)}).severity == "ok"


def _with_covariate(n, mean, sd):
    # Sufficient statistics of n values with this mean and sample sd, as the covariate.
    total = n * mean
    return SampleStats(
        n=n, sum=0, sum_sq=0, cov_sum=total, cov_sum_sq=sd**2 * (n - 1) + total**2 / n
    )


def test_pre_exposure_imbalance_on_the_cuped_covariate():
    balanced = check_pre_exposure_imbalance(
        "Revenue", "treatment", "mean", _with_covariate(1000, 10, 5), _with_covariate(1000, 10.1, 5)
    )
    assert balanced.severity == "ok"
    skewed = check_pre_exposure_imbalance(
        "Revenue", "treatment", "mean", _with_covariate(1000, 10, 5), _with_covariate(1000, 12, 5)
    )
    assert skewed.severity == "warning" and skewed.value < 0.001
    assert "Before exposure, 'treatment' already differed" in skewed.message
    ratio = check_pre_exposure_imbalance(
        "CTR", "treatment", "ratio", _with_covariate(10, 1, 1), _with_covariate(10, 5, 1)
    )
    assert ratio.severity == "ok"


# --- per arm ---


def test_ill_health_rolls_back_before_anything_else():
    d = decide_arm([outcome(**WIN)], unhealthy_reasons=["Sample ratio mismatch (p = 1e-9)"])
    assert d.action == "rollback" and d.harm and d.reasons == ["Sample ratio mismatch (p = 1e-9)"]


def test_guardrail_harm_rolls_back_naming_metric_lift_and_interval():
    guard = outcome(
        "guardrail", name="Checkout errors", direction="decrease", margin=0.05,
        lift_rel=0.12, ci_low=0.04, ci_high=0.2, harmed=True, non_inferior=False,
    )  # fmt: skip
    d = decide_arm([outcome(**WIN), guard], unhealthy_reasons=[])
    assert d.action == "rollback" and d.harm
    assert d.reasons == [
        "Checkout errors (guardrail) rose in 'treatment': +12.0% (95% interval +4.0% to "
        "+20.0%). The whole interval is on the harmful side, so this is not chance."
    ]


def test_primary_harm_rolls_back():
    d = decide_arm([outcome(name="Purchase", **HARM)], unhealthy_reasons=[])
    assert d.action == "rollback" and d.harm
    assert d.reasons[0].startswith("Purchase (primary) fell in 'treatment': -10.0%")


def test_secondary_harm_does_not_roll_back():
    d = decide_arm([outcome(**WIN), outcome("secondary", **HARM)], unhealthy_reasons=[])
    assert d.action == "keep"


def test_keep_needs_a_primary_win_and_every_guardrail_non_inferior():
    d = decide_arm(
        [outcome(name="Purchase", alpha=0.025, **WIN), outcome("guardrail", **SAFE_GUARDRAIL)],
        unhealthy_reasons=[],
    )
    assert d.action == "keep" and d.variant == "treatment" and not d.harm
    assert d.reasons[0] == (
        "Purchase (primary) rose in 'treatment': +8.0% (97.5% interval +2.0% to +14.0%)."
    )
    assert "not worse by more than its 5% margin" in d.reasons[1]


def test_an_open_guardrail_blocks_keep_and_extends():
    ext = Extension(units=1200, days=2.5, mde=0.05, metric="Purchase")
    d = decide_arm(
        [outcome(**WIN), outcome("guardrail", **OPEN_GUARDRAIL)],
        unhealthy_reasons=[],
        extension=ext,
    )
    assert d.action == "extend" and d.extension == ext
    assert any("a drop of more than 5% cannot be ruled out yet" in r for r in d.reasons)
    assert d.reasons[-1] == (
        "Run longer: about 1,200 more units, about 2.5 more days at the traffic so far, to "
        "detect a 5% change in Purchase with 80% power."
    )


def test_do_no_harm_ships_on_non_inferiority_alone():
    primary = outcome(non_inferior=True, margin=0.0)
    guard = outcome("guardrail", **SAFE_GUARDRAIL)
    assert decide_arm([primary, guard], unhealthy_reasons=[]).action == "extend"
    d = decide_arm([primary, guard], unhealthy_reasons=[], policy="do_no_harm")
    assert d.action == "keep"
    assert "not worse by more than its 0% margin" in d.reasons[0]
    unsure = outcome(non_inferior=False, margin=0.0)
    assert decide_arm([unsure, guard], unhealthy_reasons=[], policy="do_no_harm").action == (
        "extend"
    )


def test_inconclusive_primary_extends_with_words_a_pm_reads():
    d = decide_arm([outcome(name="Purchase", lift_rel=0.012)], unhealthy_reasons=[])
    assert d.action == "extend" and d.extension is None
    assert d.reasons == [
        "Purchase (primary) in 'treatment': +1.2% so far, but the 95% interval (-5.0% to "
        "+5.0%) still includes no change."
    ]


def test_past_the_horizon_without_a_win_rolls_back_without_harm():
    d = decide_arm(
        [outcome()],
        unhealthy_reasons=[],
        past_horizon=True,
        horizon_reason="No detectable improvement after the planned sample of 10,000 units.",
    )
    assert d.action == "rollback" and not d.harm
    assert d.reasons[0] == "No detectable improvement after the planned sample of 10,000 units."


def test_a_win_past_the_horizon_still_ships():
    assert decide_arm([outcome(**WIN)], unhealthy_reasons=[], past_horizon=True).action == "keep"


def test_extension_reason_when_the_sample_is_already_enough():
    ext = Extension(units=0, days=0.0, mde=0.05, metric="Purchase")
    d = decide_arm([outcome()], unhealthy_reasons=[], extension=ext)
    assert "probably smaller than that" in d.reasons[-1]


def test_extension_without_traffic_says_so():
    ext = Extension(units=500, days=None, mde=0.05, metric="Purchase")
    d = decide_arm([outcome()], unhealthy_reasons=[], extension=ext)
    assert "no traffic yet to estimate the days" in d.reasons[-1]


# --- the experiment ---


def test_harm_in_any_arm_rolls_the_experiment_back():
    arms = {
        "b": Decision("keep", ["b wins"], variant="b"),
        "c": Decision("rollback", ["c harms"], harm=True),
    }
    d = decide_experiment(arms)
    assert d.action == "rollback" and d.harm and d.reasons == ["c harms"]


def test_a_keeper_beats_extend_and_no_improvement():
    arms = {
        "b": Decision("extend", ["b unsure"]),
        "c": Decision("keep", ["c wins"], variant="c"),
        "d": Decision("rollback", ["d: nothing"]),
    }
    d = decide_experiment(arms)
    assert d.action == "keep" and d.variant == "c" and d.reasons == ["c wins"]


def test_several_keepers_name_the_first():
    d = decide_experiment(
        {"b": Decision("keep", ["b"], variant="b"), "c": Decision("keep", ["c"], variant="c")}
    )
    assert d.variant == "b" and d.reasons[0].startswith("Several arms may ship")


def test_extend_takes_the_longest_extension():
    short = Extension(100, 1.0, 0.05, "m")
    long = Extension(900, 9.0, 0.05, "m")
    d = decide_experiment(
        {
            "b": Decision("extend", ["x"], extension=short),
            "c": Decision("extend", ["x"], extension=long),
        }
    )
    assert d.action == "extend" and d.extension == long and d.reasons == ["x"]


def test_every_arm_out_of_time_rolls_back_without_harm():
    d = decide_experiment({"b": Decision("rollback", ["no improvement"])})
    assert d.action == "rollback" and not d.harm


def test_no_arms_extends():
    assert decide_experiment({}).action == "extend"


@pytest.mark.parametrize(
    "kw,status",
    [
        (HARM, "harmed"),
        (WIN, "improved"),
        (SAFE_GUARDRAIL, "non_inferior"),
        ({"non_inferior": True}, "neutral"),  # no margin: not a non-inferiority test
        ({}, "neutral"),
    ],
)
def test_metric_status(kw, status):
    assert metric_status(outcome(**kw)) == status


# --- how much longer ---


def test_extension_estimate_matches_the_power_calculation():
    control = SampleStats(n=1000, sum=100, sum_sq=100)  # 10% conversion
    ext = estimate_extension(
        metric="Purchase",
        kind="binomial",
        control=control,
        variance=0.09,
        mde=None,
        alpha=0.05,
        design="sequential",
        n_arms=2,
        current_units=2000,
        elapsed_days=4.0,
        tuning_n=5000,
    )
    size = power_sample_size(
        mde=DEFAULT_MDE, baseline_mean=0.1, kind="binomial", alpha=0.05, design="sequential",
        tuning_n=5000,
    )  # fmt: skip
    expected = days_remaining(current_units=2000, required_units=size.total, elapsed_days=4.0)
    assert ext.units == expected.units and ext.days == pytest.approx(expected.days)
    assert ext.mde == DEFAULT_MDE and ext.metric == "Purchase"


def test_extension_estimate_reaches_at_least_the_planned_sample():
    control = SampleStats(n=1000, sum=500, sum_sq=500)
    ext = estimate_extension(
        metric="m", kind="binomial", control=control, variance=0.25, mde=0.5, alpha=0.05,
        design="fixed", n_arms=2, current_units=2000, elapsed_days=1.0, planned_units=50_000,
    )  # fmt: skip
    assert ext.units == 48_000 and ext.days == pytest.approx(24.0)


@pytest.mark.parametrize(
    "kind,stats,variance",
    [
        ("binomial", SampleStats(n=1, sum=1, sum_sq=1), 0.0),  # too few units
        ("binomial", SampleStats(n=100, sum=0, sum_sq=0), 0.0),  # zero baseline
        ("mean", SampleStats(n=100, sum=50, sum_sq=25), 0.0),  # no variance
        ("ratio", SampleStats(n=100, sum=5, sum_sq=5, den_sum=0), 1.0),  # no denominator
    ],
)
def test_no_extension_estimate_without_a_usable_baseline(kind, stats, variance):
    assert (
        estimate_extension(
            metric="m",
            kind=kind,
            control=stats,
            variance=variance,
            mde=0.05,
            alpha=0.05,
            design="sequential",
            n_arms=2,
            current_units=100,
            elapsed_days=1.0,
        )  # fmt: skip
        is None
    )


def test_extension_uses_the_ratio_of_sums_as_baseline():
    stats = SampleStats(n=500, sum=250, sum_sq=400, den_sum=1000, den_sum_sq=2500, sum_prod=600)
    ext = estimate_extension(
        metric="CTR", kind="ratio", control=stats, variance=0.2, mde=0.1, alpha=0.05,
        design="fixed", n_arms=2, current_units=1000, elapsed_days=2.0,
    )  # fmt: skip
    size = power_sample_size(
        mde=0.1, baseline_mean=0.25, baseline_variance=0.2, kind="ratio", alpha=0.05
    )
    assert ext.units == size.total - 1000
    assert math.isfinite(ext.days)


def test_exposures_before_the_phase_start_are_a_warning_with_their_count():
    from datetime import UTC, datetime

    from analysis.recommendations import check_pre_start_exposures

    start = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert check_pre_start_exposures(0, start).severity == "ok"
    one = check_pre_start_exposures(1, start)
    assert one.severity == "warning" and one.value == 1 and "1 exposure is stamped" in one.message
    many = check_pre_start_exposures(12, start)
    assert "12 exposures are stamped before this phase started (2026-11-01 09:30 UTC)" in (
        many.message
    )
