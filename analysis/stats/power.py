"""Sample size, minimum detectable effect and time remaining, for fixed and sequential designs.

Two arms with equal allocation, n units each. The test is the one ``analyze_metric`` runs, so
its standard error under the alternative is se(n) = sqrt(V / n) on the absolute scale with
  V = s_c^2 + s_t^2                    for an absolute effect delta,
  V = s_t^2 + s_c^2 (1 + delta)^2      for a relative lift delta (delta-method variance of
                                       (m_t - m_c) / m_c, times m_c^2),
where s_c^2 is the control per-unit variance and s_t^2 the treatment's: equal to s_c^2 for
"mean"/"count" metrics, p_t (1 - p_t) with p_t = p (1 + delta) for "binomial" ones.
Power of a two-sided test whose rejection half-width at n is w(n), effect D on the absolute
scale: Phi((D - w) / se) + Phi((-D - w) / se) (both tails, as statsmodels ``NormalIndPower``;
with an absolute effect and equal variances the two agree exactly). Designs:
- "fixed": w = z_{1-alpha/2} se (Chow, Shao & Wang, "Sample Size Calculations in Clinical
  Research", 3rd ed., section 3.2);
- "group_sequential": the fixed n times the inflation factor of the Lan-DeMets design with the
  given looks (Jennison & Turnbull 2000, section 2.5);
- "sequential": w = the confidence-sequence half-width at N = 2n units, tuned at ``tuning_n``
  (default: the design's own 2n, i.e. tuned to the planned sample). This is the power of the
  interval at the planned sample alone; stopping earlier only adds to it (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, stats

from . import group_sequential, sequential

DESIGNS = ("fixed", "group_sequential", "sequential")


@dataclass(frozen=True)
class SampleSize:
    per_arm_exact: float  # continuous solution, units per arm
    per_arm: int  # rounded up
    total: int  # per_arm x n_arms
    inflation: float  # per-arm size over the fixed design's (1 for "fixed")


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

    def variance_sum(self, mde: float) -> float:
        """V: n times the variance of the estimated difference under the alternative."""
        if self.kind == "binomial":
            p = self.baseline_mean
            p_t = p * (1 + mde) if self.relative else p + mde
            p_t = min(max(p_t, 0.0), 1.0)
            var_c, var_t = p * (1 - p), p_t * (1 - p_t)
        else:
            assert self.baseline_variance is not None
            var_c = var_t = self.baseline_variance
        if self.relative:
            return var_t + var_c * (1 + mde) ** 2
        return var_c + var_t

    def power(self, n: float, mde: float, design: str) -> float:
        se = math.sqrt(self.variance_sum(mde) / n)
        shift = self.shift(mde)
        if design == "sequential":
            tuning = self.tuning_n if self.tuning_n is not None else 2.0 * n
            width = float(sequential.halfwidth(se**2, 2.0 * n, self.alpha, tuning))
        else:
            width = float(stats.norm.isf(self.alpha / 2.0)) * se
        return float(stats.norm.cdf((shift - width) / se) + stats.norm.cdf((-shift - width) / se))


def _problem(
    baseline_mean: float,
    baseline_variance: float | None,
    kind: str,
    relative: bool,
    alpha: float,
    tuning_n: float | None,
) -> _Problem:
    if kind not in ("binomial", "mean", "count", "ratio"):
        raise ValueError(f"unknown metric kind {kind!r}")
    if kind == "binomial":
        if not 0 < baseline_mean < 1:
            raise ValueError("a binomial baseline rate must be in (0, 1)")
    elif baseline_variance is None or baseline_variance <= 0:
        raise ValueError("baseline_variance must be positive for mean, count and ratio metrics")
    if relative and baseline_mean == 0:
        raise ValueError("a relative MDE needs a non-zero baseline mean")
    return _Problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)


def _fractions(looks: int | Sequence[float]) -> tuple[float, ...]:
    if isinstance(looks, int):
        if looks < 1:
            raise ValueError("looks must be at least 1")
        return tuple((k + 1) / looks for k in range(looks))
    return tuple(float(t) for t in looks)


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
) -> float:
    """Power at n units per arm of the "fixed" or "sequential" (confidence sequence) design."""
    if design not in ("fixed", "sequential"):
        raise ValueError("power() covers 'fixed' and 'sequential'; see inflation_factor for GS")
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    return problem.power(n_per_arm, mde, design)


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
    looks: int | Sequence[float] = 5,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> SampleSize:
    """Units per arm (and in total over ``n_arms``) to detect ``mde`` with ``power`` at
    two-sided ``alpha``. ``mde`` is a relative lift (0.05 = +5%) unless ``relative`` is False;
    ``baseline_variance`` is the per-unit variance (derived from the rate for "binomial").
    ``looks`` (a number of equally spaced looks, or their information fractions), ``spending``
    and ``rho`` describe a group-sequential design; ``tuning_n`` a confidence sequence.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; expected one of {DESIGNS}")
    if mde == 0:
        raise ValueError("the MDE must be non-zero")
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)

    def solve(inner: str) -> float:
        def shortfall(n: float) -> float:
            return problem.power(n, mde, inner) - power

        z_sum = float(stats.norm.isf(alpha / 2.0) + stats.norm.ppf(power))
        upper = 2.0 * z_sum**2 * problem.variance_sum(mde) / problem.shift(mde) ** 2
        while shortfall(upper) < 0:
            upper *= 2.0
        return float(optimize.brentq(shortfall, 1e-9, upper, xtol=1e-10, rtol=1e-14))

    n_fixed = solve("fixed")
    if design == "group_sequential":
        inflation = group_sequential.inflation_factor(
            _fractions(looks), alpha, power, spending, rho, two_sided=True
        )
    elif design == "sequential":
        inflation = solve("sequential") / n_fixed
    else:
        inflation = 1.0
    exact = n_fixed * inflation
    per_arm = math.ceil(exact - 1e-9)
    return SampleSize(exact, per_arm, per_arm * n_arms, inflation)


def mde_for_sample(
    *,
    n_per_arm: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    design: str = "fixed",
    looks: int | Sequence[float] = 5,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> float:
    """Smallest positive effect detectable with ``power`` at ``n_per_arm`` units per arm
    (relative to ``baseline_mean`` when ``relative``); the inverse of ``power_sample_size``."""
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; expected one of {DESIGNS}")
    if n_per_arm <= 0:
        raise ValueError("n_per_arm must be positive")
    problem = _problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)
    n, inner = n_per_arm, design
    if design == "group_sequential":
        n = n_per_arm / group_sequential.inflation_factor(
            _fractions(looks), alpha, power, spending, rho, two_sided=True
        )
        inner = "fixed"

    def shortfall(mde: float) -> float:
        return problem.power(n, mde, inner) - power

    upper = 1.0
    if kind == "binomial":  # the treatment rate must stay below 1
        upper = (
            (1 / baseline_mean - 1) * (1 - 1e-9) if relative else (1 - baseline_mean) * (1 - 1e-9)
        )
        if shortfall(upper) < 0:
            raise ValueError("no effect reaches that power at this sample size")
    else:
        while shortfall(upper) < 0:
            upper *= 2.0
    return float(optimize.brentq(shortfall, 1e-12, upper, xtol=1e-14, rtol=1e-12))


def days_remaining(*, current_units: int, required_units: int, elapsed_days: float) -> Remaining:
    """Units still needed and the days they take at the traffic seen so far
    (current_units / elapsed_days units a day)."""
    units = max(int(required_units) - int(current_units), 0)
    if units == 0:
        return Remaining(0, 0.0)
    if current_units <= 0 or elapsed_days <= 0:
        return Remaining(units, None)
    return Remaining(units, units / (current_units / elapsed_days))
