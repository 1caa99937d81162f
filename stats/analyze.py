"""One metric, one treatment arm against control: every number the dashboard shows.

The inputs are per-variant sufficient statistics (``SampleStats``) and a frozen
``AnalysisConfig``; the output is a frozen ``MetricResult`` whose floats are all finite or None.
Data never raises: empty arms, one unit, zero variance or a zero control mean give a result
with the affected numbers set to None and ``message`` saying why; statistics that cannot be
right (non-finite sums, more conversions than units, a zero ratio denominator) give a result
with ``error`` set and no test. Invalid configuration (an unknown kind or method) is a
programming error and raises ``ValueError``.

``analyze_metric`` runs these steps, each a function here or in a module of its own:
1. where this look sits in its design (``deciding_interval.this_look``);
2. statistics that cannot be right, or an arm without units, end it early (``_early_result``);
3. the arm estimates, CUPED-adjusted when asked and useful (``_arms``), and the lifts;
4. the deciding interval, Fieller's relative interval and non-inferiority (``deciding_interval``,
   whose docstring says why decisions are taken on the absolute difference);
5. unless ``config.p_values`` is off: the p-value and the analyst views (``analyst_views``).
The types are in ``analysis_types``.
"""

from __future__ import annotations

import math

from .analysis_types import DIRECTIONS, METHODS, AnalysisConfig, MetricResult, finite_or_none
from .analyst_views import analyst_views
from .deciding_interval import (
    Decision,
    Look,
    decide,
    deciding_p_value,
    fieller_interval,
    non_inferiority,
    relative_interval,
    this_look,
)
from .estimators import ArmEstimate, Effect, SampleStats, absolute_effect, arm_estimate, cuped_arms

__all__ = [
    "DIRECTIONS",
    "METHODS",
    "AnalysisConfig",
    "MetricResult",
    "analyze_metric",
    "fieller_interval",
    "inconsistency",
]


def _raw_mean(stats: SampleStats, kind: str) -> float | None:
    if stats.n <= 0:
        return None
    return arm_estimate(stats, kind).unadjusted_mean


_EMPTY_FIELDS: dict[str, object] = {
    "control_mean": None,
    "variant_mean": None,
    "lift_abs": None,
    "lift_rel": None,
    "ci_low": None,
    "ci_high": None,
    "ci_abs_low": None,
    "ci_abs_high": None,
    "p_value": None,
    "fixed_ci_low": None,
    "fixed_ci_high": None,
    "fixed_p_value": None,
    "cs_ci_low": None,
    "cs_ci_high": None,
    "cs_p_value": None,
    "significant": False,
    "improved": False,
    "harmed": False,
    "non_inferior": None,
    "chance_to_win": None,
    "credible_low": None,
    "credible_high": None,
    "cuped_variance_reduction": None,
    "information_fraction": None,
    "boundary_z": None,
    "alpha_good": None,
    "alpha_bad": None,
    "bound_bad_z": None,
    "error": None,
}


def _result(
    control: SampleStats,
    treatment: SampleStats,
    method: str,
    messages: list[str],
    **values: object,
) -> MetricResult:
    fields = dict(_EMPTY_FIELDS)
    for key, value in values.items():
        if key not in fields:
            raise TypeError(f"unknown result field {key}")
        fields[key] = finite_or_none(value) if isinstance(value, float) else value
    return MetricResult(
        control_n=int(control.n),
        variant_n=int(treatment.n),
        method=method,
        message="; ".join(messages) if messages else None,
        **fields,  # type: ignore[arg-type]
    )


def inconsistency(stats: SampleStats, kind: str) -> str | None:
    """Why an arm's sufficient statistics cannot be right, or None. Such a metric is marked
    as errored instead of producing a test from impossible numbers."""
    values = [float(getattr(stats, f)) for f in SampleStats.__dataclass_fields__]
    if not all(math.isfinite(v) for v in values):
        return "the sums are not finite (an event value overflows them)"
    if stats.n < 0:
        return "a negative number of units"
    if stats.sum_sq < 0 or stats.den_sum_sq < 0 or stats.cov_sum_sq < 0:
        return "a negative sum of squares"
    if kind == "binomial" and not 0 <= stats.sum <= stats.n:
        return f"{stats.sum:g} conversions among {stats.n} units (a binomial metric counts 0 or 1)"
    if kind == "ratio" and stats.n > 0 and stats.den_sum <= 0:
        return "the ratio's denominator is 0: the ratio is undefined"
    return None


def _arms(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig, messages: list[str]
) -> tuple[ArmEstimate, ArmEstimate, float | None, float]:
    """Both arms (CUPED-adjusted when asked and useful), the variance reduction and theta."""
    if not config.cuped:
        c, t = arm_estimate(control, config.kind), arm_estimate(treatment, config.kind)
        return c, t, None, 0.0
    if config.kind == "ratio":
        messages.append("CUPED is not applied to ratio metrics")
        c, t = arm_estimate(control, config.kind), arm_estimate(treatment, config.kind)
        return c, t, None, 0.0
    c, t, fit = cuped_arms(control, treatment, config.kind)
    if not fit.applied:
        messages.append(
            "CUPED: the pre-exposure covariate does not reduce the variance; unadjusted estimate"
        )
        return c, t, fit.variance_reduction, 0.0
    return c, t, fit.variance_reduction, fit.theta


def _levels(config: AnalysisConfig) -> dict[str, object]:
    return dict(alpha_good=config.good_level, alpha_bad=config.bad_level)


def _early_result(
    control: SampleStats,
    treatment: SampleStats,
    config: AnalysisConfig,
    look: Look,
    messages: list[str],
) -> MetricResult | None:
    """The result without a test when an arm's statistics cannot be right (``error``) or an
    arm has no units; None when the analysis goes on."""
    for name, arm in (("control", control), ("treatment", treatment)):
        problem = inconsistency(arm, config.kind)
        if problem is not None:
            error = f"{name}: {problem}"
            return _result(control, treatment, look.method, [], error=error, **_levels(config))
    if control.n > 0 and treatment.n > 0:
        return None
    empty = [name for name, s in (("control", control), ("treatment", treatment)) if s.n <= 0]
    messages.insert(0, f"no units in {' and '.join(empty)}")
    return _result(
        control,
        treatment,
        look.method,
        messages,
        control_mean=_raw_mean(control, config.kind),
        variant_mean=_raw_mean(treatment, config.kind),
        information_fraction=look.fraction,
        **_levels(config),
    )


def _estimate_fields(
    c_arm: ArmEstimate,
    t_arm: ArmEstimate,
    effect: Effect,
    reduction: float | None,
    look: Look,
    config: AnalysisConfig,
    messages: list[str],
) -> dict[str, object]:
    """The means and lifts, shown with or without a test."""
    base_mean = abs(c_arm.unadjusted_mean)
    lift_rel = effect.estimate / base_mean if base_mean > 0 else None
    if lift_rel is None:
        messages.append("control mean is 0: relative lift undefined")
    return dict(
        control_mean=c_arm.unadjusted_mean,
        variant_mean=t_arm.unadjusted_mean,
        lift_abs=effect.estimate,
        lift_rel=lift_rel,
        cuped_variance_reduction=reduction,
        information_fraction=look.fraction,
        **_levels(config),
    )


def _decision_fields(
    decision: Decision,
    relative: tuple[float | None, float | None] | None,
    config: AnalysisConfig,
    messages: list[str],
) -> dict[str, object]:
    """The deciding interval on both scales and what it declares."""
    rel_low, rel_high = relative if relative is not None else (None, None)
    return dict(
        ci_low=rel_low,
        ci_high=rel_high,
        ci_abs_low=decision.abs_low,
        ci_abs_high=decision.abs_high,
        significant=decision.improved or decision.harmed,
        improved=decision.improved,
        harmed=decision.harmed,
        non_inferior=non_inferiority(config, relative, messages),
    )


def _display_fields(
    c_arm: ArmEstimate,
    t_arm: ArmEstimate,
    effect: Effect,
    decision: Decision,
    n_total: int,
    config: AnalysisConfig,
    look: Look,
) -> dict[str, object]:
    """The numbers that decide nothing: the p-value, the design's bounds, the analyst views."""
    return dict(
        p_value=deciding_p_value(effect, n_total, config, look),
        boundary_z=decision.k_good if look.in_design else None,
        bound_bad_z=decision.k_bad if look.in_design else None,
        **analyst_views(c_arm, t_arm, effect, n_total, config),
    )


def analyze_metric(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig
) -> MetricResult:
    """Compare ``treatment`` with ``control`` for one metric (see the module docstring)."""
    messages: list[str] = []
    look = this_look(control, treatment, config, messages)
    early = _early_result(control, treatment, config, look, messages)
    if early is not None:
        return early
    c_arm, t_arm, reduction, theta = _arms(control, treatment, config, messages)
    effect = absolute_effect(c_arm, t_arm)
    fields = _estimate_fields(c_arm, t_arm, effect, reduction, look, config, messages)
    if min(control.n, treatment.n) < 2:
        messages.append("fewer than 2 units in an arm: no test yet")
        return _result(control, treatment, look.method, messages, **fields)
    if not effect.usable:
        messages.append("zero variance in both arms: no test")
        return _result(control, treatment, look.method, messages, **fields)

    n_total = control.n + treatment.n
    decision = decide(effect, n_total, config, look, messages)
    relative = None
    if fields["lift_rel"] is not None:
        mu_c = c_arm.unadjusted_mean
        relative = relative_interval(decision, effect, control, config, theta, mu_c, messages)
    fields.update(_decision_fields(decision, relative, config, messages))
    if config.p_values:
        fields.update(_display_fields(c_arm, t_arm, effect, decision, n_total, config, look))
    return _result(control, treatment, look.method, messages, **fields)
