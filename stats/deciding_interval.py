"""The deciding interval: the absolute test, its p-value and Fieller's relative interval.

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

from . import sequential
from .analysis_types import AnalysisConfig, finite_or_none
from .estimators import Effect, SampleStats, control_mean_moments
from .fixed import t_quantile, t_test
from .gs_bounds import efficacy_bounds
from .gs_repeated import repeated_p_value
from .gs_spending import look_fractions


@dataclass(frozen=True)
class Look:
    """The method actually used and, for group_sequential, where this look sits in the design."""

    method: str
    fractions: tuple[float, ...] | None = None  # group_sequential: the looks up to this one
    fraction: float | None = None  # group_sequential: n / planned_n

    @property
    def in_design(self) -> bool:
        """A group-sequential look placed in its design (there are units and a plan)."""
        return self.method == "group_sequential" and self.fractions is not None


def this_look(
    control: SampleStats, treatment: SampleStats, config: AnalysisConfig, messages: list[str]
) -> Look:
    """The method actually used and, for group_sequential, this look's place in the design."""
    if config.method != "group_sequential":
        return Look(config.method)
    if not config.planned_n or config.planned_n <= 0:
        messages.append("no planned sample size: the confidence sequence is used instead")
        return Look("sequential")
    fraction = (control.n + treatment.n) / config.planned_n
    if fraction <= 0:  # no units yet: nothing to place in the design
        return Look("group_sequential", None, 0.0)
    fractions = look_fractions(config.previous_fractions, fraction)
    return Look("group_sequential", fractions, fraction)


def multiplier(
    level: float, effect: Effect, n_total: int, config: AnalysisConfig, look: Look
) -> float:
    """k such that estimate -/+ k se is one side of the deciding interval at one-sided
    ``level`` (inf: nothing spent yet). A symmetric pair uses the two-sided form at 2 level, so
    the deciding interval is then exactly the method's two-sided interval at alpha."""
    two = config.symmetric
    if look.method == "fixed":
        q = level if not two else config.alpha / 2.0
        return t_quantile(q, effect.dof)
    if look.in_design:
        assert look.fractions is not None
        a, sided = (config.alpha, True) if two else (level, False)
        return efficacy_bounds(look.fractions, a, config.spending, config.rho, two_sided=sided)[-1]
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
    return finite_or_none(low), finite_or_none(high)


@dataclass(frozen=True)
class Decision:
    """The deciding interval on the absolute difference and what it declares."""

    k_good: float  # multiplier of se on the side that declares an improvement (inf: none yet)
    k_bad: float  # multiplier of se on the side that declares harm
    k_low: float  # the same two, by the side of the interval they bound
    k_high: float
    abs_low: float
    abs_high: float
    improved: bool  # the good-side bound is past 0
    harmed: bool  # the harmful-side bound is past 0


def decide(
    effect: Effect, n_total: int, config: AnalysisConfig, look: Look, messages: list[str]
) -> Decision:
    """The deciding interval d -/+ k se, each side at its own one-sided level."""
    k_good = multiplier(config.good_level, effect, n_total, config, look)
    k_bad = multiplier(config.bad_level, effect, n_total, config, look)
    increase = config.direction == "increase"
    k_low, k_high = (k_good, k_bad) if increase else (k_bad, k_good)
    if not (math.isfinite(k_good) and math.isfinite(k_bad)):
        messages.append(
            f"group-sequential: no alpha is spent yet at information fraction {look.fraction:.4f}"
        )
    d, se = effect.estimate, effect.se
    abs_low, abs_high = d - k_low * se, d + k_high * se
    good_bound, bad_bound = (abs_low, abs_high) if increase else (abs_high, abs_low)
    improved = good_bound > 0 if increase else good_bound < 0
    harmed = bad_bound < 0 if increase else bad_bound > 0
    return Decision(k_good, k_bad, k_low, k_high, abs_low, abs_high, improved, harmed)


def relative_interval(
    decision: Decision,
    effect: Effect,
    control: SampleStats,
    config: AnalysisConfig,
    theta: float,
    control_mean: float,
    messages: list[str],
) -> tuple[float | None, float | None]:
    """Fieller's interval for the relative lift d / |mu_c| at the deciding multipliers, with
    the moments of the (CUPED-adjusted) control mean; needs a non-zero control mean."""
    var_b, cov_ab = control_mean_moments(control, config.kind, theta)
    sign = 1.0 if control_mean > 0 else -1.0
    low, high = fieller_interval(
        effect.estimate,
        abs(control_mean),
        effect.variance,
        var_b,
        sign * cov_ab,
        decision.k_low,
        decision.k_high,
    )
    if low is None or high is None:
        messages.append(
            "the relative interval is unbounded on one side: the control mean is not yet "
            "distinguishable from 0"
        )
    return low, high


def non_inferiority(
    config: AnalysisConfig,
    relative: tuple[float | None, float | None] | None,
    messages: list[str],
) -> bool | None:
    """With a margin: whether the good-side bound of the relative interval is inside it (None
    without a margin, or without a relative lift)."""
    if config.margin is None:
        return None
    if relative is None:
        messages.append("non-inferiority needs a relative lift: not judged")
        return None
    increase = config.direction == "increase"
    bound = relative[0] if increase else relative[1]
    return bound is not None and (bound > -config.margin if increase else bound < config.margin)


def deciding_p_value(
    effect: Effect, n_total: int, config: AnalysisConfig, look: Look
) -> float | None:
    """Two-sided p-value of the absolute test, valid under peeking for the method."""
    z = effect.estimate / effect.se
    if look.method == "fixed":
        return t_test(effect, config.alpha).p_value
    if look.in_design:
        assert look.fractions is not None
        if not config.p_values:
            return None
        return repeated_p_value(z, look.fractions, config.alpha, config.spending, config.rho)
    return float(
        sequential.p_value(effect.estimate, effect.variance, n_total, config.alpha, config.tuning_n)
    )
