"""One metric, one treatment arm against control: every number the dashboard shows.

The inputs are per-variant sufficient statistics (``SampleStats``) and a frozen
``AnalysisConfig``; the output is a frozen ``MetricResult`` whose floats are all finite or None.
Data never raises: empty arms, one unit, zero variance or a zero control mean give a result
with the affected numbers set to None and ``message`` saying why. Invalid configuration
(an unknown kind or method) is a programming error and raises ``ValueError``.

Inference is on the relative lift when it is defined (control mean != 0 and its delta-method
variance > 0), so ``p_value`` agrees with ``ci_low``/``ci_high``; otherwise on the absolute
difference. When the relative lift exists but its variance is 0 (e.g. no conversions at all in
the treatment arm), the relative intervals are the absolute ones divided by the control mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import group_sequential, sequential
from .bayesian import gaussian_posterior
from .estimators import (
    KINDS,
    ArmEstimate,
    Effect,
    SampleStats,
    absolute_effect,
    arm_estimate,
    cuped_arms,
    relative_effect,
)
from .fixed import t_test
from .group_sequential import SPENDING_FUNCTIONS

METHODS = ("sequential", "group_sequential", "fixed")
DIRECTIONS = ("increase", "decrease")


@dataclass(frozen=True)
class AnalysisConfig:
    kind: str = "mean"  # "binomial" | "mean" | "count" | "ratio"
    alpha: float = 0.05  # already Bonferroni-divided by the caller where needed
    method: str = "sequential"  # "sequential" (confidence sequence) | "group_sequential" | "fixed"
    tuning_n: int = sequential.DEFAULT_TUNING_N  # confidence-sequence tuning size (total units)
    planned_n: int | None = None  # total planned units of the two arms, for group_sequential
    previous_fractions: tuple[float, ...] = ()  # information fractions of earlier looks
    spending: str = "obrien_fleming"  # or "power"
    rho: float = 2.0  # exponent of the power spending function alpha * t^rho
    cuped: bool = False
    prior_mean: float = 0.0  # Bayesian view, prior on the relative effect
    prior_sd: float | None = None  # None = flat prior
    margin: float | None = None  # non-inferiority margin as a relative lift (0.01 = 1%)
    direction: str = "increase"  # "increase" | "decrease": which side is good

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; expected one of {KINDS}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.spending not in SPENDING_FUNCTIONS:
            raise ValueError(f"unknown spending {self.spending!r}; expected {SPENDING_FUNCTIONS}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {DIRECTIONS}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.tuning_n <= 0:
            raise ValueError("tuning_n must be positive")
        if self.rho <= 0:
            raise ValueError("rho must be positive")
        if self.margin is not None and self.margin < 0:
            raise ValueError("margin must be non-negative (a relative lift, e.g. 0.01)")


@dataclass(frozen=True)
class MetricResult:
    """Every number the dashboard shows; all floats finite or None."""

    control_n: int
    variant_n: int
    control_mean: float | None
    variant_mean: float | None
    lift_abs: float | None  # CUPED-adjusted when CUPED is applied
    lift_rel: float | None
    ci_low: float | None  # relative lift, valid under peeking for the chosen method
    ci_high: float | None
    ci_abs_low: float | None  # same, absolute difference
    ci_abs_high: float | None
    p_value: float | None  # always-valid / sequential p (fixed p for method "fixed")
    fixed_ci_low: float | None  # fixed-horizon view (relative)
    fixed_ci_high: float | None
    fixed_p_value: float | None
    cs_ci_low: float | None  # confidence-sequence view (relative), always computed
    cs_ci_high: float | None
    cs_p_value: float | None
    method: str  # the method actually used (group_sequential without a plan -> sequential)
    significant: bool  # p_value < alpha (two-sided)
    improved: bool  # significant in the good direction
    harmed: bool  # significant in the bad direction
    non_inferior: bool | None  # with a margin: one-sided always-valid bound inside the margin
    chance_to_win: float | None
    credible_low: float | None
    credible_high: float | None
    cuped_variance_reduction: float | None  # fraction, e.g. 0.35
    information_fraction: float | None  # group_sequential: n / planned_n
    boundary_z: float | None  # group_sequential efficacy bound at this look
    message: str | None  # why a number is None


@dataclass(frozen=True)
class _Interval:
    low: float | None
    high: float | None
    p_value: float | None


@dataclass(frozen=True)
class _Views:
    fixed: _Interval
    cs: _Interval
    gs: _Interval | None


@dataclass(frozen=True)
class _Design:
    """Where this look sits in the group-sequential design."""

    fractions: tuple[float, ...]
    bound: float  # two-sided efficacy bound at this look (may be inf: nothing spent yet)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _views(effect: Effect, n_total: int, config: AnalysisConfig, design: _Design | None) -> _Views:
    fixed = t_test(effect, config.alpha)
    width = float(sequential.halfwidth(effect.variance, n_total, config.alpha, config.tuning_n))
    cs_p = float(
        sequential.p_value(effect.estimate, effect.variance, n_total, config.alpha, config.tuning_n)
    )
    cs = _Interval(effect.estimate - width, effect.estimate + width, cs_p)
    gs = None
    if design is not None:
        z = effect.estimate / effect.se
        p = group_sequential.repeated_p_value(
            z, design.fractions, config.alpha, config.spending, config.rho
        )
        half = design.bound * effect.se
        gs = _Interval(_finite(effect.estimate - half), _finite(effect.estimate + half), p)
    return _Views(
        _Interval(fixed.low, fixed.high, fixed.p_value),
        cs,
        gs,
    )


def _scale(interval: _Interval, factor: float) -> _Interval:
    """An absolute interval divided by the control mean (the sign of the mean may flip it)."""
    if interval.low is None or interval.high is None:
        return _Interval(None, None, interval.p_value)
    low, high = sorted((interval.low / factor, interval.high / factor))
    return _Interval(low, high, interval.p_value)


def _one_sided_bound(
    effect: Effect, n_total: int, config: AnalysisConfig, method: str, design: _Design | None
) -> float | None:
    """The always-valid bound on the harmful side at level alpha (one-sided)."""
    harmful_low = config.direction == "increase"  # harm is a fall: look at the lower bound
    if method == "fixed":
        test = t_test(effect, config.alpha, "greater" if harmful_low else "less")
        return _finite(test.low if harmful_low else test.high)
    if method == "group_sequential" and design is not None:
        bound = group_sequential.efficacy_bounds(
            design.fractions, config.alpha, config.spending, config.rho, two_sided=False
        )[-1]
        width = bound * effect.se
    else:
        width = float(
            sequential.halfwidth(
                effect.variance, n_total, config.alpha, config.tuning_n, two_sided=False
            )
        )
    return _finite(effect.estimate - width if harmful_low else effect.estimate + width)


def _raw_mean(stats: SampleStats, kind: str) -> float | None:
    if stats.n <= 0:
        return None
    return arm_estimate(stats, kind).unadjusted_mean


def _result(
    control: SampleStats,
    treatment: SampleStats,
    method: str,
    messages: list[str],
    **values: object,
) -> MetricResult:
    fields: dict[str, object] = {
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
    }
    for key, value in values.items():
        if key not in fields:
            raise TypeError(f"unknown result field {key}")
        fields[key] = _finite(value) if isinstance(value, float) else value
    return MetricResult(
        control_n=int(control.n),
        variant_n=int(treatment.n),
        method=method,
        message="; ".join(messages) if messages else None,
        **fields,  # type: ignore[arg-type]
    )


def _design(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig, messages: list[str]
) -> tuple[str, _Design | None, float | None]:
    """The method actually used and, for group_sequential, this look's place in the design."""
    if config.method != "group_sequential":
        return config.method, None, None
    if not config.planned_n or config.planned_n <= 0:
        messages.append("no planned sample size: the confidence sequence is used instead")
        return "sequential", None, None
    fraction = (control.n + treatment.n) / config.planned_n
    if fraction <= 0:  # no units yet: nothing to place in the design
        return "group_sequential", None, 0.0
    fractions = group_sequential.look_fractions(config.previous_fractions, fraction)
    bound = group_sequential.efficacy_bounds(fractions, config.alpha, config.spending, config.rho)[
        -1
    ]
    if not math.isfinite(bound):
        messages.append(
            f"group-sequential: no alpha is spent yet at information fraction {fraction:.4f}"
        )
    return "group_sequential", _Design(fractions, bound), fraction


def _arms(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig, messages: list[str]
) -> tuple[ArmEstimate, ArmEstimate, float | None]:
    if not config.cuped:
        return arm_estimate(control, config.kind), arm_estimate(treatment, config.kind), None
    if config.kind == "ratio":
        messages.append("CUPED is not applied to ratio metrics")
        return arm_estimate(control, config.kind), arm_estimate(treatment, config.kind), None
    c, t, fit = cuped_arms(control, treatment, config.kind)
    if not fit.applied:
        messages.append(
            "CUPED: the pre-exposure covariate does not reduce the variance; unadjusted estimate"
        )
    return c, t, fit.variance_reduction


def analyze_metric(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig
) -> MetricResult:
    """Compare ``treatment`` with ``control`` for one metric (see the module docstring)."""
    messages: list[str] = []
    method, design, fraction = _design(control, treatment, config, messages)
    if control.n <= 0 or treatment.n <= 0:
        empty = [name for name, s in (("control", control), ("treatment", treatment)) if s.n <= 0]
        messages.insert(0, f"no units in {' and '.join(empty)}")
        return _result(
            control,
            treatment,
            method,
            messages,
            control_mean=_raw_mean(control, config.kind),
            variant_mean=_raw_mean(treatment, config.kind),
            information_fraction=fraction,
        )

    c_arm, t_arm, reduction = _arms(control, treatment, config, messages)
    abs_eff = absolute_effect(c_arm, t_arm)
    rel_eff = relative_effect(c_arm, t_arm)
    if rel_eff is None:
        messages.append("control mean is 0: relative lift undefined")
    base = dict(
        control_mean=c_arm.unadjusted_mean,
        variant_mean=t_arm.unadjusted_mean,
        lift_abs=abs_eff.estimate,
        lift_rel=rel_eff.estimate if rel_eff is not None else None,
        cuped_variance_reduction=reduction,
        information_fraction=fraction,
        boundary_z=design.bound if design is not None else None,
    )
    if min(control.n, treatment.n) < 2:
        messages.append("fewer than 2 units in an arm: no test yet")
        return _result(control, treatment, method, messages, **base)
    if not abs_eff.usable:
        messages.append("zero variance in both arms: no test")
        return _result(control, treatment, method, messages, **base)

    n_total = control.n + treatment.n
    abs_views = _views(abs_eff, n_total, config, design)
    rel_usable = rel_eff is not None and rel_eff.usable
    if rel_usable:
        assert rel_eff is not None
        rel_views: _Views | None = _views(rel_eff, n_total, config, design)
    elif rel_eff is not None:
        messages.append("relative intervals are the absolute ones over the control mean")
        mu = c_arm.unadjusted_mean
        rel_views = _Views(
            _scale(abs_views.fixed, mu),
            _scale(abs_views.cs, mu),
            _scale(abs_views.gs, mu) if abs_views.gs is not None else None,
        )
    else:
        rel_views = None
    # p-values come from the relative test when it is defined, else the absolute one.
    primary = rel_views if rel_usable and rel_views is not None else abs_views
    primary_effect = rel_eff if rel_usable and rel_eff is not None else abs_eff

    def chosen(views: _Views | None) -> _Interval | None:
        if views is None:
            return None
        if method == "fixed":
            return views.fixed
        return views.gs if method == "group_sequential" and views.gs is not None else views.cs

    rel_chosen, abs_chosen, p_chosen = chosen(rel_views), chosen(abs_views), chosen(primary)
    assert abs_chosen is not None and p_chosen is not None
    p_value = p_chosen.p_value
    significant = p_value is not None and p_value < config.alpha
    good = (
        primary_effect.estimate > 0
        if config.direction == "increase"
        else primary_effect.estimate < 0
    )
    bad = (
        primary_effect.estimate < 0
        if config.direction == "increase"
        else primary_effect.estimate > 0
    )

    non_inferior = None
    if config.margin is not None:
        if rel_eff is None:
            messages.append("non-inferiority needs a relative lift: not judged")
        else:
            scale = 1.0
            effect = rel_eff
            if not rel_usable:  # judge on the absolute difference, margin scaled by the mean
                effect, scale = abs_eff, c_arm.unadjusted_mean
            bound = _one_sided_bound(effect, n_total, config, method, design)
            if bound is not None and scale != 1.0:
                bound = bound / scale
            if bound is not None:
                non_inferior = (
                    bound > -config.margin
                    if config.direction == "increase"
                    else bound < config.margin
                )

    bayes = {}
    if rel_usable and rel_eff is not None:
        posterior = gaussian_posterior(
            rel_eff, config.alpha, config.prior_mean, config.prior_sd, config.direction
        )
        bayes = dict(
            chance_to_win=posterior.chance_to_win,
            credible_low=posterior.credible_low,
            credible_high=posterior.credible_high,
        )

    return _result(
        control,
        treatment,
        method,
        messages,
        **base,
        ci_low=rel_chosen.low if rel_chosen else None,
        ci_high=rel_chosen.high if rel_chosen else None,
        ci_abs_low=abs_chosen.low,
        ci_abs_high=abs_chosen.high,
        p_value=p_value,
        fixed_ci_low=rel_views.fixed.low if rel_views else None,
        fixed_ci_high=rel_views.fixed.high if rel_views else None,
        fixed_p_value=primary.fixed.p_value,
        cs_ci_low=rel_views.cs.low if rel_views else None,
        cs_ci_high=rel_views.cs.high if rel_views else None,
        cs_p_value=primary.cs.p_value,
        significant=significant,
        improved=significant and good,
        harmed=significant and bad,
        non_inferior=non_inferior,
        **bayes,
    )
