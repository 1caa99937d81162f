"""Sample size and minimum detectable effect of one comparison, for fixed and sequential designs.

The power of the comparison is in ``power_problem``. Designs:
- "fixed": w = z_{1-alpha/2} se;
- "group_sequential": the fixed n times the inflation factor of the Lan-DeMets design with the
  given looks (Jennison & Turnbull 2000, section 2.5). The factor is on the information scale,
  so it is the same for every allocation ratio. The default is ``PIPELINE_LOOKS`` equally
  spaced looks, the most the analysis pipeline counts (see ``LOOK_STEP``);
- "sequential": w = the confidence-sequence half-width at N = n_c + n_t units, tuned at
  ``tuning_n`` (default: the design's own N, i.e. tuned to the planned sample). This is the power
  of the interval at the planned sample alone; stopping earlier only adds to it (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, stats

from .power_problem import (
    DESIGNS,
    PIPELINE_LOOKS,
    InvalidInput,
    Problem,
    check_level,
    check_mde,
    check_ratio,
    gs_inflation,
    make_problem,
)


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
    check_level(alpha, None)
    check_ratio(ratio)
    problem = make_problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    return problem.power(n_per_arm, mde, design, ratio)


def _control_units(problem: Problem, mde: float, power: float, ratio: float, design: str) -> float:
    """Control units at which the "fixed" or "sequential" design reaches ``power``: the root of
    the power curve, bracketed from twice the normal-approximation size upwards."""

    def shortfall(n: float) -> float:
        return problem.power(n, mde, design, ratio) - power

    z_sum = float(stats.norm.isf(problem.alpha / 2.0) + stats.norm.ppf(power))
    upper = 2.0 * z_sum**2 * problem.variance_sum(mde, ratio) / problem.shift(mde) ** 2
    while shortfall(upper) < 0:
        upper *= 2.0
    return float(optimize.brentq(shortfall, 1e-9, upper, xtol=1e-10, rtol=1e-14))


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
    check_level(alpha, power)
    check_ratio(ratio)
    problem = make_problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    check_mde(problem, mde)

    n_fixed = _control_units(problem, mde, power, ratio, "fixed")
    if design == "group_sequential":
        inflation = gs_inflation(looks, alpha, power, spending, rho)
    elif design == "sequential":
        inflation = _control_units(problem, mde, power, ratio, "sequential") / n_fixed
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
    check_level(alpha, power)
    check_ratio(ratio)
    problem = make_problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    n, inner = n_per_arm, design
    if design == "group_sequential":
        n = n_per_arm / gs_inflation(looks, alpha, power, spending, rho)
        inner = "fixed"

    return _smallest_mde(problem, n, power, ratio, inner)


def _smallest_mde(problem: Problem, n: float, power: float, ratio: float, design: str) -> float:
    """The positive effect at which the "fixed" or "sequential" design with n control units
    reaches ``power`` (for "binomial", below the effect that takes the treatment rate to 1)."""

    def shortfall(mde: float) -> float:
        return problem.power(n, mde, design, ratio) - power

    upper = 1.0
    if problem.kind == "binomial":  # the treatment rate must stay below 1
        p = problem.baseline_mean
        upper = (1 / p - 1) * (1 - 1e-9) if problem.relative else (1 - p) * (1 - 1e-9)
        if shortfall(upper) < 0:
            raise InvalidInput("n_per_arm", "no effect reaches that power at this sample size")
    else:
        while shortfall(upper) < 0:
            upper *= 2.0
    return float(optimize.brentq(shortfall, 1e-12, upper, xtol=1e-14, rtol=1e-12))
