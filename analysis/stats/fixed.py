"""Fixed-horizon Welch t-tests and confidence intervals for an effect (one look, planned n)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from .estimators import Effect

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class IntervalTest:
    """A confidence interval (infinite on the open side of a one-sided test) and its p-value."""

    low: float
    high: float
    p_value: float


def two_sided_p(t_stat: ArrayLike, dof: ArrayLike) -> np.ndarray:
    """Two-sided p-value 2 P(T_dof > |t|); vectorised for the simulation."""
    return np.minimum(2.0 * stats.t.sf(np.abs(np.asarray(t_stat, dtype=float)), dof), 1.0)


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
        width = float(stats.t.ppf(1 - alpha / 2, dof)) * se
        p = float(two_sided_p(t_stat, dof))
        return IntervalTest(effect.estimate - width, effect.estimate + width, p)
    width = float(stats.t.ppf(1 - alpha, dof)) * se
    if alternative == "greater":
        return IntervalTest(effect.estimate - width, math.inf, float(stats.t.sf(t_stat, dof)))
    return IntervalTest(-math.inf, effect.estimate + width, float(stats.t.cdf(t_stat, dof)))
