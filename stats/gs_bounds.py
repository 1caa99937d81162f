"""Efficacy bounds of a Lan-DeMets design, its crossing probabilities and its sample-size inflation.

Lan & DeMets (1983), "Discrete sequential boundaries for clinical trials", Biometrika 70: at each
look the bound is chosen so that P(first crossing at this look | H0) = alpha(t_k) - alpha(t_{k-1})
(the spending functions are in ``gs_spending``), under the canonical joint normal distribution of
the look statistics (Jennison & Turnbull 2000, "Group Sequential Methods with Applications to
Clinical Trials", section 3.1 and chapter 19); the probabilities come from the recursion in
``gs_recursion``, at lattice steps h and 2 h, Richardson-extrapolated.

Any strictly increasing sequence of positive fractions is accepted (1e-9 and 0.5, 0.5000001
included); bounds solve log P(c) = log(increment) by a Newton iteration kept inside a bracket,
so no NaN can reach the root finder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from .gs_recursion import TAIL_SDS, Paths
from .gs_spending import check_design, check_fractions, spent_alpha

_TINY = 1e-250  # increments below this get their marginal bound (log P would underflow)


def _solve_bound(paths: Paths, t: float, increment: float, two_sided: bool) -> float:
    """z-bound at time t whose first-crossing probability under H0 equals ``increment``.

    Solves log P(c) = log(increment) by Newton's method (P' is minus the sub-density at the
    bound), starting at the marginal bound and kept inside a bracket (bisection whenever a step
    would leave it). log P is concave in c (the sub-density is log-concave: truncated Gaussians
    convolved with Gaussians), so the iterates converge in a few steps, and any probability
    down to 1e-250 is resolved relatively. The true bound never exceeds the marginal one, but
    the discretised P may exceed the increment there by its O(h^2) error: the root is then
    taken above the marginal bound, so that the Richardson step removes that error as well.
    """
    sides = 2.0 if two_sided else 1.0
    if increment <= 0:
        return math.inf
    marginal = float(-special.ndtri(increment / sides))
    if paths.empty:  # no path is left: nothing can be spent, any bound will do
        return 0.0
    if increment < _TINY or paths.grid is None:  # point mass at 0: P(c) is the marginal tail
        return marginal
    root_t = math.sqrt(t)
    log_target = math.log(increment)
    lo = 0.0 if two_sided else -TAIL_SDS - 2.0  # P(lo) >= increment: every alive path crosses
    hi = math.inf
    c = marginal
    for _ in range(200):
        up, low, dens = paths.tails(t, c * root_t, two_sided)
        total = up + low
        gap = math.log(total) - log_target if total > 0.0 else -math.inf
        if gap == 0.0:
            return c
        if gap > 0:
            lo = c
        else:
            hi = c
        slope = dens * root_t  # -dP/dc
        step = gap * total / slope if slope > 0.0 and math.isfinite(gap) else math.nan
        tolerance = 1e-12 * max(1.0, abs(c))
        if abs(step) <= tolerance:  # converged (a NaN step compares False)
            return c + step
        new = c + step
        if not lo < new < hi:
            new = lo + 1.0 if math.isinf(hi) else 0.5 * (lo + hi)
            if hi - lo <= tolerance:
                return new
        c = new
    return c


def _richardson(fine: float, coarse: float) -> float:
    """Error O(h^2) removed: c_h + (c_h - c_2h) / 3 (infinite bounds are kept as they are)."""
    if math.isfinite(fine) and math.isfinite(coarse):
        return fine + (fine - coarse) / 3.0
    return fine


def _bounds_at_step(
    fractions: tuple[float, ...],
    alpha: float,
    spending: str,
    rho: float,
    two_sided: bool,
    scale: float,
) -> list[float]:
    paths = Paths(drift=0.0, scale=scale)
    bounds: list[float] = []
    spent = 0.0
    for t in fractions:
        target = spent_alpha(t, alpha, spending, rho, two_sided)
        c = _solve_bound(paths, t, target - spent, two_sided)
        bounds.append(c)
        spent = max(spent, target)
        paths.advance(t, c * math.sqrt(t), two_sided)
    return bounds


def compute_bounds(
    fractions: tuple[float, ...], alpha: float, spending: str, rho: float, two_sided: bool
) -> tuple[float, ...]:
    """``efficacy_bounds`` computed afresh, without its cache (fractions already checked)."""
    check_design(alpha, spending)
    fine = _bounds_at_step(fractions, alpha, spending, rho, two_sided, 1.0)
    coarse = _bounds_at_step(fractions, alpha, spending, rho, two_sided, 2.0)
    # no bound exceeds its marginal one (first crossings are a subset of crossings)
    caps = _marginal_bounds(fractions, alpha, spending, rho, two_sided)
    return tuple(min(_richardson(f, c), cap) for f, c, cap in zip(fine, coarse, caps, strict=True))


_bounds_cached = lru_cache(maxsize=512)(compute_bounds)


def _marginal_bounds(
    fractions: tuple[float, ...], alpha: float, spending: str, rho: float, two_sided: bool
) -> list[float]:
    """Bounds whose marginal crossing probability is the increment: an upper limit."""
    sides = 2.0 if two_sided else 1.0
    caps, spent = [], 0.0
    for t in fractions:
        target = spent_alpha(t, alpha, spending, rho, two_sided)
        increment = target - spent
        caps.append(float(-special.ndtri(increment / sides)) if increment > 0 else math.inf)
        spent = max(spent, target)
    return caps


def efficacy_bounds(
    fractions: Sequence[float],
    alpha: float = 0.05,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    two_sided: bool = True,
) -> tuple[float, ...]:
    """Efficacy z-bounds for looks at the given information fractions (any spacing).

    Fractions above 1 spend nothing more than alpha(1); a look after all alpha is spent
    gets an infinite bound. Reject H0 at look k when |Z_k| >= bound_k (Z_k >= bound_k
    one-sided). Every bound is finite or +inf, never NaN. Cached: the same looks are
    evaluated for every metric of a run.
    """
    return _bounds_cached(
        check_fractions(fractions), float(alpha), spending, float(rho), bool(two_sided)
    )


def _crossings_at_step(
    fractions: tuple[float, ...],
    bounds: Sequence[float],
    drift: float,
    two_sided: bool,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    paths = Paths(drift=drift, scale=scale)
    upper, lower = [], []
    for t, c in zip(fractions, bounds, strict=True):
        a = c * math.sqrt(t) if math.isfinite(c) else math.inf
        up, low = paths.crossing(t, a, two_sided) if math.isfinite(a) else (0.0, 0.0)
        upper.append(up)
        lower.append(low)
        paths.advance(t, a, two_sided)
    return np.array(upper), np.array(lower)


def crossing_probabilities(
    fractions: Sequence[float], bounds: Sequence[float], drift: float, two_sided: bool = True
) -> tuple[list[float], list[float]]:
    """P(first crossing at each look) of the upper and lower bound when B(t) = drift t + W(t),
    i.e. when E[Z_k] = drift sqrt(t_k) (Jennison & Turnbull section 19.2); Richardson-
    extrapolated over grid steps h and 2 h like the bounds."""
    fractions = check_fractions(fractions)
    up_h, low_h = _crossings_at_step(fractions, bounds, drift, two_sided, 1.0)
    up_2h, low_2h = _crossings_at_step(fractions, bounds, drift, two_sided, 2.0)
    upper = np.maximum(up_h + (up_h - up_2h) / 3.0, 0.0)
    lower = np.maximum(low_h + (low_h - low_2h) / 3.0, 0.0)
    return upper.tolist(), lower.tolist()


def inflation_factor(
    fractions: Sequence[float],
    alpha: float = 0.05,
    power: float = 0.8,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    two_sided: bool = True,
) -> float:
    """Maximum sample size of the design over the fixed-horizon sample size at equal power:
    R = (theta_GS / (z_{1-alpha/2} + z_power))^2, theta_GS the drift at which the upper
    bound is crossed with probability ``power`` (Jennison & Turnbull section 2.5, table 7.6).
    Fractions are those of the planned looks, the last normally 1.
    """
    fractions = check_fractions(fractions)
    bounds = efficacy_bounds(fractions, alpha, spending, rho, two_sided)
    scale = fractions[-1]
    z_alpha = float(stats.norm.isf(alpha / 2.0 if two_sided else alpha))
    theta_fixed = z_alpha + float(stats.norm.ppf(power))

    def shortfall(theta: float) -> float:
        upper, _ = crossing_probabilities(fractions, bounds, theta, two_sided)
        return sum(upper) - power

    theta = optimize.brentq(shortfall, theta_fixed * 0.5, theta_fixed * 3.0, xtol=1e-8)
    return float((theta / theta_fixed) ** 2 / scale)
