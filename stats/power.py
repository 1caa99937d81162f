"""Sample size, minimum detectable effect and duration, for fixed and sequential designs.

A comparison (pair) of a control arm with n_c units and a treatment arm with n_t = r n_c units
(allocation ratio r = w_t / w_c from the variant weights). The test is the one ``analyze_metric``
runs, so its standard error under the alternative is, on the absolute scale,
  se^2 = s_c^2 / n_c + s_t^2 / n_t                  for an absolute effect delta,
  se^2 = s_t^2 / n_t + s_c^2 (1 + delta)^2 / n_c    for a relative lift delta (delta-method
                                                    variance of (m_t - m_c) / m_c, times m_c^2),
where s_c^2 is the control per-unit variance and s_t^2 the treatment's: equal to s_c^2 for
"mean"/"count"/"ratio" metrics, p_t (1 - p_t) with p_t = p (1 + delta) for "binomial" ones.
With r = 1 this is se^2 = V / n, V = s_c^2 + s_t^2 (Chow, Shao & Wang, "Sample Size
Calculations in Clinical Research", 3rd ed., section 3.2; unequal allocation: section 3.2.1,
n_t = kappa n_c). Power of a two-sided test whose rejection half-width at n is w(n), effect D on
the absolute scale: Phi((D - w) / se) + Phi((-D - w) / se) (both tails, as statsmodels
``NormalIndPower``, whose ``ratio`` is our r; with an absolute effect and equal variances the two
agree exactly). Designs:
- "fixed": w = z_{1-alpha/2} se;
- "group_sequential": the fixed n times the inflation factor of the Lan-DeMets design with the
  given looks (Jennison & Turnbull 2000, section 2.5). The factor is on the information scale,
  so it is the same for every allocation ratio. The default is ``PIPELINE_LOOKS`` equally
  spaced looks, the most the analysis pipeline counts (see ``LOOK_STEP``);
- "sequential": w = the confidence-sequence half-width at N = n_c + n_t units, tuned at
  ``tuning_n`` (default: the design's own N, i.e. tuned to the planned sample). This is the power
  of the interval at the planned sample alone; stopping earlier only adds to it (conservative).

Several arms (``allocation_sample_size``): each treatment arm is compared with the control, at
the alpha the caller gives (the Bonferroni share). With weights w_i (W = sum w_i), the control has
N w_c / W of a total N, so the pair of treatment i needs N >= n_c(r_i) W / w_c; the pair that
needs the most decides N, and every arm gets N w_i / W.

Duration (``days_for_sample``): units arrive at daily_units x coverage a day; a ramp plan holds
stage k at coverage c_k for its min_hours h_k (advancing as soon as allowed) and the last stage
until the sample is reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from scipy import optimize, stats

from . import group_sequential, sequential

DESIGNS = ("fixed", "group_sequential", "sequential")

# Mirrors the analysis pipeline's look step (analysis.services.MIN_LOOK_STEP = 0.01, not
# imported: the stats engine does not depend on the pipeline): a snapshot counts as a new
# group-sequential look per 1% of a pair's planned information, so a planned experiment is
# tested at up to 100 looks. Planning for fewer looks would understate the sample it needs.
LOOK_STEP = 0.01
PIPELINE_LOOKS = round(1 / LOOK_STEP)


class InvalidInput(ValueError):
    """An input no design can satisfy; ``field`` names the argument at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SampleSize:
    per_arm_exact: float  # continuous solution, units per arm
    per_arm: int  # rounded up
    total: int  # per_arm x n_arms
    inflation: float  # per-arm size over the fixed design's (1 for "fixed")


@dataclass(frozen=True)
class PairSize:
    control_exact: float  # units in the control arm (continuous solution)
    treatment_exact: float  # ratio x control_exact
    inflation: float  # over the fixed design's size at the same ratio (1 for "fixed")


@dataclass(frozen=True)
class AllocationSize:
    arms_exact: tuple[float, ...]  # units per arm at the weights, in the order given
    arms: tuple[int, ...]  # each rounded up
    total: int  # sum of ``arms``: the planned sample size of the experiment
    inflation: float  # over the fixed design (1 for "fixed")
    deciding: int  # index of the treatment arm whose comparison needs the most units


@dataclass(frozen=True)
class Remaining:
    units: int  # more units needed (0 when the target is reached)
    days: float | None  # at the observed traffic rate; None when no traffic has been seen


@dataclass(frozen=True)
class _Problem:
    baseline_mean: float
    baseline_variance: float | None
    kind: str
    relative: bool
    alpha: float
    tuning_n: float | None

    def shift(self, mde: float) -> float:
        """The effect on the absolute scale."""
        return abs(mde * self.baseline_mean) if self.relative else abs(mde)

    def treatment_rate(self, mde: float) -> float:
        p = self.baseline_mean
        return p * (1 + mde) if self.relative else p + mde

    def variance_sum(self, mde: float, ratio: float = 1.0) -> float:
        """n_c times the variance of the estimated difference under the alternative."""
        if self.kind == "binomial":
            p, p_t = self.baseline_mean, self.treatment_rate(mde)
            var_c, var_t = p * (1 - p), max(p_t * (1 - p_t), 0.0)
        else:
            assert self.baseline_variance is not None
            var_c = var_t = self.baseline_variance
        if self.relative:
            return var_t / ratio + var_c * (1 + mde) ** 2
        return var_c + var_t / ratio

    def power(self, n: float, mde: float, design: str, ratio: float = 1.0) -> float:
        """Power with n control units and ratio x n treatment units."""
        se = math.sqrt(self.variance_sum(mde, ratio) / n)
        shift = self.shift(mde)
        if design == "sequential":
            units = n * (1.0 + ratio)
            tuning = self.tuning_n if self.tuning_n is not None else units
            width = float(sequential.halfwidth(se**2, units, self.alpha, tuning))
        else:
            width = float(stats.norm.isf(self.alpha / 2.0)) * se
        return float(stats.norm.cdf((shift - width) / se) + stats.norm.cdf((-shift - width) / se))


def _check_level(alpha: float, power: float | None) -> None:
    if not 0 < alpha < 1:
        raise InvalidInput("alpha", "alpha must be between 0 and 1 (0.05 = 5%)")
    if power is not None and not alpha / 2 < power < 1:
        raise InvalidInput("power", "power must be above alpha / 2 and below 1 (0.8 = 80%)")


def _check_ratio(ratio: float) -> None:
    if not (math.isfinite(ratio) and ratio > 0):
        raise InvalidInput("ratio", "the allocation ratio n_t / n_c must be positive")


def _problem(
    baseline_mean: float,
    baseline_variance: float | None,
    kind: str,
    relative: bool,
    alpha: float,
    tuning_n: float | None,
) -> _Problem:
    if kind not in ("binomial", "mean", "count", "ratio"):
        raise InvalidInput("kind", f"unknown metric kind {kind!r}")
    if not math.isfinite(baseline_mean):
        raise InvalidInput("baseline_mean", "the baseline must be a finite number")
    if kind == "binomial":
        if not 0 < baseline_mean < 1:
            raise InvalidInput(
                "baseline_mean", "a binomial baseline rate must be between 0 and 1, exclusive"
            )
    elif baseline_variance is None or not baseline_variance > 0 or math.isinf(baseline_variance):
        raise InvalidInput(
            "baseline_variance",
            "baseline_variance must be positive for mean, count and ratio metrics",
        )
    if relative and baseline_mean == 0:
        raise InvalidInput("baseline_mean", "a relative MDE needs a non-zero baseline mean")
    return _Problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)


def _check_mde(problem: _Problem, mde: float) -> None:
    if not math.isfinite(mde) or mde == 0:
        raise InvalidInput("mde", "the MDE must be a non-zero number")
    if problem.relative and mde <= -1:
        raise InvalidInput("mde", "a relative MDE must be above -100%")
    if problem.kind == "binomial":
        p, p_t = problem.baseline_mean, problem.treatment_rate(mde)
        if not 0 < p_t < 1:
            limit = (1 / p - 1) if problem.relative else 1 - p
            shown = f"{limit:+.2%}" if problem.relative else f"{limit:+.4g}"
            raise InvalidInput(
                "mde",
                f"a baseline rate of {p:g} with this MDE means a treatment rate of {p_t:.4g}, "
                f"outside (0, 1): no conversion rate can move that far (the largest increase "
                f"is {shown}); lower the MDE",
            )


def _fractions(looks: int | Sequence[float]) -> tuple[float, ...]:
    if isinstance(looks, int):
        if looks < 1:
            raise InvalidInput("looks", "looks must be at least 1")
        return tuple((k + 1) / looks for k in range(looks))
    return tuple(float(t) for t in looks)


@lru_cache(maxsize=256)
def _cached_inflation(
    fractions: tuple[float, ...], alpha: float, power: float, spending: str, rho: float
) -> float:
    # inflation_factor takes a second or two at 100 looks: computed once per design.
    return group_sequential.inflation_factor(fractions, alpha, power, spending, rho, True)


def gs_inflation(
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    alpha: float = 0.05,
    power: float = 0.8,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
) -> float:
    """``group_sequential.inflation_factor`` for a two-sided design, cached by its arguments."""
    return _cached_inflation(_fractions(looks), float(alpha), float(power), spending, float(rho))


def power(
    *,
    n_per_arm: float,
    mde: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    relative: bool = True,
    design: str = "fixed",
    tuning_n: float | None = None,
    ratio: float = 1.0,
) -> float:
    """Power of the "fixed" or "sequential" (confidence sequence) design with ``n_per_arm``
    control units and ``ratio`` x ``n_per_arm`` treatment units."""
    if design not in ("fixed", "sequential"):
        raise ValueError("power() covers 'fixed' and 'sequential'; see inflation_factor for GS")
    _check_level(alpha, None)
    _check_ratio(ratio)
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    return problem.power(n_per_arm, mde, design, ratio)


def pair_sample_size(
    *,
    mde: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    ratio: float = 1.0,
    design: str = "fixed",
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> PairSize:
    """Control and treatment units (treatment = ``ratio`` x control) to detect ``mde`` with
    ``power`` at two-sided ``alpha``. ``mde`` is a relative lift (0.05 = +5%) unless
    ``relative`` is False; ``baseline_variance`` is the per-unit variance (derived from the rate
    for "binomial"). ``looks`` (a number of equally spaced looks, or their information
    fractions), ``spending`` and ``rho`` describe a group-sequential design; ``tuning_n`` a
    confidence sequence. Raises ``InvalidInput`` (a ValueError naming the argument) when no
    sample can reach the power, e.g. a binomial treatment rate outside (0, 1).
    """
    if design not in DESIGNS:
        raise InvalidInput("design", f"unknown design {design!r}; expected one of {DESIGNS}")
    _check_level(alpha, power)
    _check_ratio(ratio)
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    _check_mde(problem, mde)

    def solve(inner: str) -> float:
        def shortfall(n: float) -> float:
            return problem.power(n, mde, inner, ratio) - power

        z_sum = float(stats.norm.isf(alpha / 2.0) + stats.norm.ppf(power))
        upper = 2.0 * z_sum**2 * problem.variance_sum(mde, ratio) / problem.shift(mde) ** 2
        while shortfall(upper) < 0:
            upper *= 2.0
        return float(optimize.brentq(shortfall, 1e-9, upper, xtol=1e-10, rtol=1e-14))

    n_fixed = solve("fixed")
    if design == "group_sequential":
        inflation = gs_inflation(looks, alpha, power, spending, rho)
    elif design == "sequential":
        inflation = solve("sequential") / n_fixed
    else:
        inflation = 1.0
    control = n_fixed * inflation
    return PairSize(control, control * ratio, inflation)


def power_sample_size(
    *,
    mde: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    n_arms: int = 2,
    design: str = "fixed",
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> SampleSize:
    """Units per arm (and in total over ``n_arms``) with equal allocation; see
    ``pair_sample_size`` for the arguments and ``allocation_sample_size`` for unequal weights."""
    pair = pair_sample_size(
        mde=mde,
        baseline_mean=baseline_mean,
        baseline_variance=baseline_variance,
        kind=kind,
        alpha=alpha,
        power=power,
        relative=relative,
        design=design,
        looks=looks,
        spending=spending,
        rho=rho,
        tuning_n=tuning_n,
    )
    per_arm = math.ceil(pair.control_exact - 1e-9)
    return SampleSize(pair.control_exact, per_arm, per_arm * n_arms, pair.inflation)


def _check_weights(weights: Sequence[float], control: int) -> tuple[float, ...]:
    values = tuple(float(w) for w in weights)
    if len(values) < 2:
        raise InvalidInput("weights", "give at least two weights: a control and a treatment")
    if not all(math.isfinite(w) and w > 0 for w in values):
        raise InvalidInput("weights", "every weight must be positive")
    if not 0 <= control < len(values):
        raise InvalidInput(
            "control", f"control must be an index of the weights (0 to {len(values) - 1})"
        )
    return values


def allocation_sample_size(
    *,
    weights: Sequence[float],
    control: int = 0,
    mde: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    design: str = "fixed",
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> AllocationSize:
    """Units per arm and in total when the arms get traffic in proportion to ``weights``
    (any positive numbers; ``control`` is the index of the control arm) and each treatment is
    compared with the control at ``alpha`` (pass the Bonferroni share). The pair that needs the
    most units decides the total N; arm i gets N w_i / sum(w), rounded up. ``tuning_n`` is the
    total for the experiment: each pair's confidence sequence is tuned at its share of it."""
    values = _check_weights(weights, control)
    whole, w_c = sum(values), values[control]
    best: tuple[float, int, float] | None = None
    for i, w in enumerate(values):
        if i == control:
            continue
        pair = pair_sample_size(
            mde=mde,
            baseline_mean=baseline_mean,
            baseline_variance=baseline_variance,
            kind=kind,
            alpha=alpha,
            power=power,
            relative=relative,
            ratio=w / w_c,
            design=design,
            looks=looks,
            spending=spending,
            rho=rho,
            tuning_n=None if tuning_n is None else tuning_n * (w_c + w) / whole,
        )
        total = pair.control_exact * whole / w_c
        if best is None or total > best[0]:
            best = (total, i, pair.inflation)
    assert best is not None
    total_exact, deciding, inflation = best
    exact = tuple(total_exact * w / whole for w in values)
    arms = tuple(math.ceil(x - 1e-9) for x in exact)
    return AllocationSize(exact, arms, sum(arms), inflation, deciding)


def mde_for_sample(
    *,
    n_per_arm: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    ratio: float = 1.0,
    design: str = "fixed",
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> float:
    """Smallest positive effect detectable with ``power`` at ``n_per_arm`` control units and
    ``ratio`` x ``n_per_arm`` treatment units (relative to ``baseline_mean`` when ``relative``);
    the inverse of ``pair_sample_size``."""
    if design not in DESIGNS:
        raise InvalidInput("design", f"unknown design {design!r}; expected one of {DESIGNS}")
    if not n_per_arm > 0:
        raise InvalidInput("n_per_arm", "n_per_arm must be positive")
    _check_level(alpha, power)
    _check_ratio(ratio)
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    n, inner = n_per_arm, design
    if design == "group_sequential":
        n = n_per_arm / gs_inflation(looks, alpha, power, spending, rho)
        inner = "fixed"

    def shortfall(mde: float) -> float:
        return problem.power(n, mde, inner, ratio) - power

    upper = 1.0
    if kind == "binomial":  # the treatment rate must stay below 1
        upper = (
            (1 / baseline_mean - 1) * (1 - 1e-9) if relative else (1 - baseline_mean) * (1 - 1e-9)
        )
        if shortfall(upper) < 0:
            raise InvalidInput("n_per_arm", "no effect reaches that power at this sample size")
    else:
        while shortfall(upper) < 0:
            upper *= 2.0
    return float(optimize.brentq(shortfall, 1e-12, upper, xtol=1e-14, rtol=1e-12))


def allocation_mde(
    *,
    total: float,
    weights: Sequence[float],
    control: int = 0,
    **kwargs: object,
) -> float:
    """The MDE a total of ``total`` units split by ``weights`` detects in every comparison with
    the control: the largest of the pairs' MDEs (``kwargs`` as for ``mde_for_sample``)."""
    values = _check_weights(weights, control)
    whole, w_c = sum(values), values[control]
    if not total > 0:
        raise InvalidInput("n_per_arm", "the sample size must be positive")
    return max(
        mde_for_sample(n_per_arm=total * w_c / whole, ratio=w / w_c, **kwargs)  # type: ignore[arg-type]
        for i, w in enumerate(values)
        if i != control
    )


def days_for_sample(
    *,
    units: float,
    daily_units: float,
    coverage: float = 1.0,
    stages: Sequence[tuple[float, float]] = (),
) -> float:
    """Days until ``units`` units have entered, at ``daily_units`` a day at full coverage.

    Without ``stages`` the coverage is constant: units / (daily_units x coverage). With a ramp
    plan, ``stages`` = ((c_1, h_1), ..., (c_K, h_K)) (coverage, minimum hours): stage k runs
    h_k hours at c_k, so after it U_k = sum_{j<=k} daily_units c_j h_j / 24 units have entered;
    the stage in which U reaches ``units`` ends the count, and the last stage runs until it does
    (its h_K is not a limit). Stages are assumed to advance as soon as they are allowed to, so
    this is the shortest duration the plan permits.
    """
    if not (math.isfinite(daily_units) and daily_units > 0):
        raise InvalidInput("daily_units", "daily units must be positive")
    if not stages:
        stages = ((coverage, 0.0),)
    hours = 0.0
    entered = 0.0
    for k, (cov, min_hours) in enumerate(stages):
        if not 0 < cov <= 1:
            raise InvalidInput("stages", f"stage {k + 1}: coverage must be in (0, 1]")
        if not (math.isfinite(min_hours) and min_hours >= 0):
            raise InvalidInput("stages", f"stage {k + 1}: minimum hours must be 0 or more")
        rate = daily_units * cov / 24.0  # units an hour
        last = k == len(stages) - 1
        if last or entered + rate * min_hours >= units:
            return (hours + max(units - entered, 0.0) / rate) / 24.0
        entered += rate * min_hours
        hours += min_hours
    raise AssertionError("unreachable")  # pragma: no cover


def days_remaining(*, current_units: int, required_units: int, elapsed_days: float) -> Remaining:
    """Units still needed and the days they take at the traffic seen so far
    (current_units / elapsed_days units a day)."""
    units = max(int(required_units) - int(current_units), 0)
    if units == 0:
        return Remaining(0, 0.0)
    if current_units <= 0 or elapsed_days <= 0:
        return Remaining(units, None)
    return Remaining(units, units / (current_units / elapsed_days))
