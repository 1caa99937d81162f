"""Asymptotic confidence sequences: always-valid CIs and p-values under continuous peeking.

Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2023), "Time-uniform central limit theory and
asymptotic confidence sequences" (arXiv:2103.06476v7): the Gaussian-mixture boundary of
eq. (9) with the mixing parameter rho tuned to a sample size (eq. 161) and the e-value of
eq. (155). The one-sided boundary is the one-sided normal mixture of Howard, Ramdas, McAuliffe
& Sekhon (2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Prop. 6).
Formulas and parametrisation match GrowthBook's gbstats ``SequentialTwoSidedTTest`` and
``SequentialOneSidedTreatment{Greater,Lesser}TTest``.

N is the number of units in the two arms compared; Var is the variance of the effect
estimate, so s^2 = Var * N is the per-unit variance of the influence function.
Functions accept numpy arrays (they broadcast) so the simulation can use the same code.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_TUNING_N = 5000


def rho(alpha: float, tuning_n: float, two_sided: bool = True) -> float:
    """Mixing parameter optimal at tuning_n units (eq. 161):
    rho = sqrt((-2 log a + log(1 - 2 log a)) / tuning_n), a = alpha (two-sided) or 2 alpha."""
    a = alpha if two_sided else 2.0 * alpha
    return float(np.sqrt((-2.0 * np.log(a) + np.log(-2.0 * np.log(a) + 1.0)) / tuning_n))


def halfwidth(
    variance: ArrayLike,
    n: ArrayLike,
    alpha: float,
    tuning_n: float = DEFAULT_TUNING_N,
    two_sided: bool = True,
) -> np.ndarray:
    """Half-width of the confidence sequence at N = n units (eq. 9):

    two-sided: sqrt(s^2 * 2 (N rho^2 + 1) / (N rho)^2 * log(sqrt(N rho^2 + 1) / alpha)),
    one-sided: sqrt(s^2 * 2 (N rho^2 + 1) / (N rho)^2 * log(1 + sqrt(N rho^2 + 1) / (2 alpha))).
    """
    variance, n = np.asarray(variance, dtype=float), np.asarray(n, dtype=float)
    r = rho(alpha, tuning_n, two_sided)
    s2 = variance * n
    tr2p1 = n * r**2 + 1.0
    if two_sided:
        log_term = np.log(np.sqrt(tr2p1) / alpha)
    else:
        log_term = np.log1p(np.sqrt(tr2p1) / (2.0 * alpha))
    return np.sqrt(s2 * 2.0 * tr2p1 * log_term / (n * r) ** 2)


def p_value(
    estimate: ArrayLike,
    variance: ArrayLike,
    n: ArrayLike,
    alpha: float,
    tuning_n: float = DEFAULT_TUNING_N,
    null: float = 0.0,
) -> np.ndarray:
    """Two-sided always-valid p-value, p = min(1, 1 / E) with the mixture e-value (eq. 155)
    E = exp(rho^2 S / (2 (N rho^2 + 1))) / sqrt(N rho^2 + 1), S = (estimate - null)^2 N / Var.

    rho is tuned with ``alpha``, so p < alpha exactly when the two-sided sequence excludes null.
    """
    estimate, variance = np.asarray(estimate, dtype=float), np.asarray(variance, dtype=float)
    n = np.asarray(n, dtype=float)
    r = rho(alpha, tuning_n, True)
    tr2p1 = n * r**2 + 1.0
    with np.errstate(over="ignore"):  # a huge statistic means p = 0, not an error
        st2 = (estimate - null) ** 2 * n / variance
        log_e = r**2 * st2 / (2.0 * tr2p1) - 0.5 * np.log(tr2p1)
        return np.minimum(np.exp(-log_e), 1.0)


def p_value_one_sided(
    estimate: ArrayLike,
    variance: ArrayLike,
    n: ArrayLike,
    alpha: float,
    tuning_n: float = DEFAULT_TUNING_N,
    greater: bool = True,
    null: float = 0.0,
) -> np.ndarray:
    """One-sided always-valid p-value: the level a at which the one-sided bound (rho fixed at
    the one tuned for ``alpha``) touches ``null``. Solving the one-sided boundary for a:
    a = sqrt(N rho^2 + 1) / (2 (exp(d^2 / A) - 1)), A = s^2 2 (N rho^2 + 1) / (N rho)^2,
    d = estimate - null; 1 when the estimate is on the null side. gbstats finds the same
    level by bisection; this is its closed form.
    """
    estimate, variance = np.asarray(estimate, dtype=float), np.asarray(variance, dtype=float)
    n = np.asarray(n, dtype=float)
    r = rho(alpha, tuning_n, False)
    tr2p1 = n * r**2 + 1.0
    a_coef = variance * n * 2.0 * tr2p1 / (n * r) ** 2
    d = estimate - null
    right_side = d > 0 if greater else d < 0
    with np.errstate(over="ignore", divide="ignore"):
        level = np.sqrt(tr2p1) / (2.0 * np.expm1(d**2 / a_coef))
    return np.where(right_side, np.minimum(level, 1.0), 1.0)
