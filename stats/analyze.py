"""One metric, one treatment arm against control: every number the dashboard shows.

The inputs are per-variant sufficient statistics (``SampleStats``) and a frozen
``AnalysisConfig``; the output is a frozen ``MetricResult`` whose floats are all finite or None.
Data never raises: empty arms, one unit, zero variance or a zero control mean give a result
with the affected numbers set to None and ``message`` saying why; statistics that cannot be
right (non-finite sums, more conversions than units, a zero ratio denominator) give a result
with ``error`` set and no test. Invalid configuration (an unknown kind or method) is a
programming error and raises ``ValueError``.

Decisions are taken on the **absolute difference** d = mean_t - mean_c. Under no effect the two
arms are exchangeable, so d / se(d) is symmetric about 0 and each tail holds its level; the
delta-method test on the relative lift does not (its standard error shrinks when the treatment
falls, so false "harmed" piles up at low base rates). Each side of the deciding interval has its
own one-sided level: ``alpha_good`` on the side that declares an improvement (or
non-inferiority), ``alpha_bad`` on the side that declares harm, so one interval carries both
families of the decision policy (docs/statistics.md "Decision policy"). The relative interval
shown is Fieller's (Fieller 1954, "Some problems in interval estimation", JRSS B 16; the set of
r with |d - r mu_c| <= k se(d - r mu_c)): it excludes 0 exactly when the absolute test rejects,
so the relative interval drawn is the one that decides. It is unbounded (None) while the control
mean is not yet distinguishable from 0.
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
    control_mean_moments,
    cuped_arms,
    relative_effect,
)
from .fixed import t_quantile, t_test
from .group_sequential import SPENDING_FUNCTIONS

METHODS = ("sequential", "group_sequential", "fixed")
DIRECTIONS = ("increase", "decrease")


@dataclass(frozen=True)
class AnalysisConfig:
    kind: str = "mean"  # "binomial" | "mean" | "count" | "ratio"
    alpha: float = 0.05  # two-sided level of the shown p-values and of the fixed / CS views
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
    # One-sided levels of the deciding interval's two sides (None: alpha / 2 each, the
    # two-sided test at alpha). alpha_good: the side that declares an improvement or
    # non-inferiority; alpha_bad: the side that declares harm.
    alpha_good: float | None = None
    alpha_bad: float | None = None
    # Display-only numbers (p-values, the fixed and CS views, the Bayesian view) decide nothing;
    # the decision simulation turns them off to run thousands of experiments.
    p_values: bool = True

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
        for name in ("alpha_good", "alpha_bad"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        if self.tuning_n <= 0:
            raise ValueError("tuning_n must be positive")
        if self.rho <= 0:
            raise ValueError("rho must be positive")
        if self.margin is not None and self.margin < 0:
            raise ValueError("margin must be non-negative (a relative lift, e.g. 0.01)")

    @property
    def good_level(self) -> float:
        return self.alpha_good if self.alpha_good is not None else self.alpha / 2.0

    @property
    def bad_level(self) -> float:
        return self.alpha_bad if self.alpha_bad is not None else self.alpha / 2.0

    @property
    def symmetric(self) -> bool:
        """Both sides at alpha / 2: the deciding interval is the two-sided one at alpha."""
        return math.isclose(self.good_level, self.alpha / 2.0) and math.isclose(
            self.bad_level, self.alpha / 2.0
        )


@dataclass(frozen=True)
class MetricResult:
    """Every number the dashboard shows; all floats finite or None."""

    control_n: int
    variant_n: int
    control_mean: float | None
    variant_mean: float | None
    lift_abs: float | None  # CUPED-adjusted when CUPED is applied
    lift_rel: float | None  # lift_abs / |control mean|: its sign is the sign of the change
    ci_low: float | None  # relative (Fieller), the deciding interval; None = unbounded
    ci_high: float | None
    ci_abs_low: float | None  # the deciding interval on the absolute difference
    ci_abs_high: float | None
    p_value: float | None  # two-sided, absolute test, valid under peeking for the method
    fixed_ci_low: float | None  # fixed-horizon view (relative, delta method)
    fixed_ci_high: float | None
    fixed_p_value: float | None
    cs_ci_low: float | None  # confidence-sequence view (relative, delta method), always computed
    cs_ci_high: float | None
    cs_p_value: float | None
    method: str  # the method actually used (group_sequential without a plan -> sequential)
    significant: bool  # improved or harmed
    improved: bool  # the good-side bound is past 0
    harmed: bool  # the harmful-side bound is past 0
    non_inferior: bool | None  # with a margin: the good-side bound is inside the margin
    chance_to_win: float | None
    credible_low: float | None
    credible_high: float | None
    cuped_variance_reduction: float | None  # fraction, e.g. 0.35
    information_fraction: float | None  # group_sequential: n / planned_n
    boundary_z: float | None  # group_sequential: the good side's bound at this look
    message: str | None  # why a number is None
    alpha_good: float | None = None  # the one-sided levels the interval was built at
    alpha_bad: float | None = None
    bound_bad_z: float | None = None  # group_sequential: the harmful side's bound at this look
    error: str | None = None  # the statistics cannot be right: no test (see module docstring)


@dataclass(frozen=True)
class _Interval:
    low: float | None
    high: float | None
    p_value: float | None


@dataclass(frozen=True)
class _Design:
    """Where this look sits in the group-sequential design."""

    fractions: tuple[float, ...]


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fixed_view(effect: Effect, config: AnalysisConfig) -> _Interval:
    test = t_test(effect, config.alpha)
    return _Interval(test.low, test.high, test.p_value)


def _cs_view(effect: Effect, n_total: int, config: AnalysisConfig) -> _Interval:
    width = float(sequential.halfwidth(effect.variance, n_total, config.alpha, config.tuning_n))
    cs_p = float(
        sequential.p_value(effect.estimate, effect.variance, n_total, config.alpha, config.tuning_n)
    )
    return _Interval(effect.estimate - width, effect.estimate + width, cs_p)


def _multiplier(
    level: float,
    *,
    effect: Effect,
    n_total: int,
    config: AnalysisConfig,
    method: str,
    design: _Design | None,
) -> float:
    """k such that estimate -/+ k se is one side of the deciding interval at one-sided
    ``level`` (inf: nothing spent yet). A symmetric pair uses the two-sided form at 2 level, so
    the deciding interval is then exactly the method's two-sided interval at alpha."""
    two = config.symmetric
    if method == "fixed":
        q = level if not two else config.alpha / 2.0
        return t_quantile(q, effect.dof)
    if method == "group_sequential" and design is not None:
        a, sided = (config.alpha, True) if two else (level, False)
        return group_sequential.efficacy_bounds(
            design.fractions, a, config.spending, config.rho, two_sided=sided
        )[-1]
    a, sided = (config.alpha, True) if two else (level, False)
    width = sequential.halfwidth(effect.variance, n_total, a, config.tuning_n, two_sided=sided)
    return float(width) / effect.se


def fieller_interval(
    a: float, b: float, var_a: float, var_b: float, cov_ab: float, k_low: float, k_high: float
) -> tuple[float | None, float | None]:
    """Bounds of the ratio a / b (b > 0): the lower end of {r : (a - r b)^2 <= k_low^2
    Var(a - r b)} and the upper end of the same set at k_high; None where the set is unbounded
    (b is within k sd of 0). Var(a - r b) = var_a - 2 r cov_ab + r^2 var_b. Fieller (1954)."""

    def ends(k: float) -> tuple[float | None, float | None]:
        if not math.isfinite(k):
            return None, None
        k2 = k * k
        quad = b * b - k2 * var_b
        lin = a * b - k2 * cov_ab
        const = a * a - k2 * var_a
        if quad <= 0:
            return None, None
        disc = max(lin * lin - quad * const, 0.0)
        root = math.sqrt(disc)
        return (lin - root) / quad, (lin + root) / quad

    low, _ = ends(k_low)
    _, high = ends(k_high)
    return _finite(low), _finite(high)


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
        fields[key] = _finite(value) if isinstance(value, float) else value
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
    return "group_sequential", _Design(fractions), fraction


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


def _repeated_p(
    effect: Effect, n_total: int, config: AnalysisConfig, method: str, design: _Design | None
) -> float | None:
    """Two-sided p-value of the absolute test, valid under peeking for the method."""
    z = effect.estimate / effect.se
    if method == "fixed":
        return t_test(effect, config.alpha).p_value
    if method == "group_sequential" and design is not None:
        if not config.p_values:
            return None
        return group_sequential.repeated_p_value(
            z, design.fractions, config.alpha, config.spending, config.rho
        )
    return float(
        sequential.p_value(effect.estimate, effect.variance, n_total, config.alpha, config.tuning_n)
    )


def analyze_metric(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig
) -> MetricResult:
    """Compare ``treatment`` with ``control`` for one metric (see the module docstring)."""
    messages: list[str] = []
    method, design, fraction = _design(control, treatment, config, messages)
    levels = dict(alpha_good=config.good_level, alpha_bad=config.bad_level)
    for name, arm in (("control", control), ("treatment", treatment)):
        problem = inconsistency(arm, config.kind)
        if problem is not None:
            return _result(control, treatment, method, [], error=f"{name}: {problem}", **levels)
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
            **levels,
        )

    c_arm, t_arm, reduction, theta = _arms(control, treatment, config, messages)
    abs_eff = absolute_effect(c_arm, t_arm)
    mu_c = c_arm.unadjusted_mean
    base_mean = abs(mu_c)
    lift_rel = abs_eff.estimate / base_mean if base_mean > 0 else None
    if lift_rel is None:
        messages.append("control mean is 0: relative lift undefined")
    base = dict(
        control_mean=mu_c,
        variant_mean=t_arm.unadjusted_mean,
        lift_abs=abs_eff.estimate,
        lift_rel=lift_rel,
        cuped_variance_reduction=reduction,
        information_fraction=fraction,
        **levels,
    )
    if min(control.n, treatment.n) < 2:
        messages.append("fewer than 2 units in an arm: no test yet")
        return _result(control, treatment, method, messages, **base)
    if not abs_eff.usable:
        messages.append("zero variance in both arms: no test")
        return _result(control, treatment, method, messages, **base)

    n_total = control.n + treatment.n
    side = dict(effect=abs_eff, n_total=n_total, config=config, method=method, design=design)
    k_good = _multiplier(config.good_level, **side)
    k_bad = _multiplier(config.bad_level, **side)
    increase = config.direction == "increase"
    k_low, k_high = (k_good, k_bad) if increase else (k_bad, k_good)
    if not (math.isfinite(k_good) and math.isfinite(k_bad)):
        messages.append(
            f"group-sequential: no alpha is spent yet at information fraction {fraction:.4f}"
        )
    d, se = abs_eff.estimate, abs_eff.se
    abs_low, abs_high = d - k_low * se, d + k_high * se
    good_bound, bad_bound = (abs_low, abs_high) if increase else (abs_high, abs_low)
    improved = good_bound > 0 if increase else good_bound < 0
    harmed = bad_bound < 0 if increase else bad_bound > 0

    rel_low = rel_high = None
    if lift_rel is not None:
        var_b, cov_ab = control_mean_moments(control, config.kind, theta)
        sign = 1.0 if mu_c > 0 else -1.0
        rel_low, rel_high = fieller_interval(
            d, base_mean, abs_eff.variance, var_b, sign * cov_ab, k_low, k_high
        )
        if rel_low is None or rel_high is None:
            messages.append(
                "the relative interval is unbounded on one side: the control mean is not yet "
                "distinguishable from 0"
            )

    non_inferior = None
    if config.margin is not None:
        if lift_rel is None:
            messages.append("non-inferiority needs a relative lift: not judged")
        else:
            bound = rel_low if increase else rel_high
            non_inferior = bound is not None and (
                bound > -config.margin if increase else bound < config.margin
            )

    if not config.p_values:
        return _result(
            control,
            treatment,
            method,
            messages,
            **base,
            ci_low=rel_low,
            ci_high=rel_high,
            ci_abs_low=abs_low,
            ci_abs_high=abs_high,
            significant=improved or harmed,
            improved=improved,
            harmed=harmed,
            non_inferior=non_inferior,
        )
    # Views for analysts: two-sided at alpha, relative by the delta method (parity with gbstats).
    rel_eff = relative_effect(c_arm, t_arm)
    rel_fixed = rel_cs = None
    if rel_eff is not None and rel_eff.usable:
        rel_fixed, rel_cs = _fixed_view(rel_eff, config), _cs_view(rel_eff, n_total, config)
    abs_fixed, abs_cs = _fixed_view(abs_eff, config), _cs_view(abs_eff, n_total, config)

    bayes = {}
    if rel_eff is not None and rel_eff.usable:
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
        ci_low=rel_low,
        ci_high=rel_high,
        ci_abs_low=abs_low,
        ci_abs_high=abs_high,
        p_value=_repeated_p(abs_eff, n_total, config, method, design),
        fixed_ci_low=rel_fixed.low if rel_fixed else None,
        fixed_ci_high=rel_fixed.high if rel_fixed else None,
        fixed_p_value=abs_fixed.p_value,
        cs_ci_low=rel_cs.low if rel_cs else None,
        cs_ci_high=rel_cs.high if rel_cs else None,
        cs_p_value=abs_cs.p_value,
        significant=improved or harmed,
        improved=improved,
        harmed=harmed,
        non_inferior=non_inferior,
        boundary_z=k_good if method == "group_sequential" and design is not None else None,
        bound_bad_z=k_bad if method == "group_sequential" and design is not None else None,
        **bayes,
    )
