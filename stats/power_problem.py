"""The power of one comparison (control against one treatment arm), and the checks of its inputs.

A control arm with n_c units and a treatment arm with n_t = r n_c units. The test is the one
``analyze_metric`` runs, so its standard error under the alternative is, on the absolute scale,
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
agree exactly). Half-widths: w = z_{1-alpha/2} se for "fixed"; for "sequential" the
confidence-sequence half-width at N = n_c + n_t units, tuned at ``tuning_n`` (default: N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from scipy import stats

from . import sequential
from .gs_bounds import inflation_factor

DESIGNS = ("fixed", "group_sequential", "sequential")

# Mirrors the analysis pipeline's look step (analysis.policy.MIN_LOOK_STEP = 0.01, not
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
class Problem:
    """One comparison to plan: the baseline, the metric kind, the scale of the MDE, the level."""

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


def check_level(alpha: float, power: float | None) -> None:
    if not 0 < alpha < 1:
        raise InvalidInput("alpha", "alpha must be between 0 and 1 (0.05 = 5%)")
    if power is not None and not alpha / 2 < power < 1:
        raise InvalidInput("power", "power must be above alpha / 2 and below 1 (0.8 = 80%)")


def check_ratio(ratio: float) -> None:
    if not (math.isfinite(ratio) and ratio > 0):
        raise InvalidInput("ratio", "the allocation ratio n_t / n_c must be positive")


def make_problem(
    baseline_mean: float,
    baseline_variance: float | None,
    kind: str,
    relative: bool,
    alpha: float,
    tuning_n: float | None,
) -> Problem:
    """The problem, once its inputs are checked (``InvalidInput`` names the one at fault)."""
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
    return Problem(baseline_mean, baseline_variance, kind, relative, alpha, tuning_n)


def check_mde(problem: Problem, mde: float) -> None:
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
    return inflation_factor(fractions, alpha, power, spending, rho, True)


def gs_inflation(
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    alpha: float = 0.05,
    power: float = 0.8,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
) -> float:
    """``group_sequential.inflation_factor`` for a two-sided design, cached by its arguments."""
    return _cached_inflation(_fractions(looks), float(alpha), float(power), spending, float(rho))
