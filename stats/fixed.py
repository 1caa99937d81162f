"""Fixed-horizon Welch t-tests and confidence intervals for an effect (one look, planned n)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .estimators import Effect

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class IntervalTest:
    """A confidence interval (infinite on the open side of a one-sided test) and its p-value."""

    low: float
    high: float
    p_value: float


def _t_sf(x: ArrayLike, dof: ArrayLike) -> np.ndarray:
    """P(T_dof > x) by scipy.special.stdtr (scipy.stats.t's own kernel, without its overhead);
    an infinite dof is the normal distribution."""
    x, dof = np.asarray(x, dtype=float), np.asarray(dof, dtype=float)
    return np.where(np.isinf(dof), special.ndtr(-x), special.stdtr(np.minimum(dof, 1e300), -x))


def t_quantile(q: float, dof: float) -> float:
    """The upper-q quantile t_{1-q, dof} (scipy.special.stdtrit; normal when dof is inf)."""
    if math.isinf(dof):
        return float(special.ndtri(1.0 - q))
    return float(special.stdtrit(dof, 1.0 - q))


def two_sided_p(t_stat: ArrayLike, dof: ArrayLike) -> np.ndarray:
    """Two-sided p-value 2 P(T_dof > |t|); vectorised for the simulation."""
    return np.minimum(2.0 * _t_sf(np.abs(np.asarray(t_stat, dtype=float)), dof), 1.0)


def t_test(
    effect: Effect, alpha: float = 0.05, alternative: str = "two-sided", null: float = 0.0
) -> IntervalTest:
    """Welch t-test of H0: effect = null, t = (estimate - null) / se with Welch dof.

    Two-sided: p = 2 P(T > |t|), CI = estimate -/+ t_{1-alpha/2, dof} se.
    "greater" (H1: effect > null): p = P(T > t), CI = [estimate - t_{1-alpha} se, inf).
    "less": p = P(T < t), CI = (-inf, estimate + t_{1-alpha} se].
    Welch (1947); identical to gbstats TwoSidedTTest / OneSidedTreatment{Greater,Lesser}TTest.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; expected one of {ALTERNATIVES}")
    se, dof = effect.se, effect.dof
    t_stat = (effect.estimate - null) / se
    if alternative == "two-sided":
        width = t_quantile(alpha / 2, dof) * se
        p = float(two_sided_p(t_stat, dof))
        return IntervalTest(effect.estimate - width, effect.estimate + width, p)
    width = t_quantile(alpha, dof) * se
    if alternative == "greater":
        return IntervalTest(effect.estimate - width, math.inf, float(_t_sf(t_stat, dof)))
    return IntervalTest(-math.inf, effect.estimate + width, float(_t_sf(-t_stat, dof)))
