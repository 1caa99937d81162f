"""Repeated p-values of a group-sequential design: the smallest level whose bound is crossed.

Jennison & Turnbull (2000), section 9.1: the repeated p-value at the current (last) look is the
smallest level at which the design's bound at that look is crossed, the earlier looks' bounds
being recomputed at that level. The level is solved for on its normal quantile q by a secant
iteration, one full design (``gs_bounds``) per step; designs are kept per set of looks, so later
calls start next to their answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from scipy import special

from .gs_bounds import compute_bounds, efficacy_bounds
from .gs_spending import check_fractions

# Repeated p-values are solved for levels between these two; outside, see repeated_p_value.
_P_SOLVED_MAX = 0.5
_P_SOLVED_MIN = 1e-18
# The secant stops once its step on the normal-quantile scale is below this; the last step is
# taken without a new design, so the error left is about curvature x step^2 (below 1e-8).
_Q_TOLERANCE = 1e-4


@lru_cache(maxsize=64)
def _level_nodes(
    fractions: tuple[float, ...], spending: str, rho: float, two_sided: bool
) -> dict[float, float]:
    """Per design, the last look's bound at each level already computed, keyed by the level's
    normal quantile q = z_{1 - level / sides}: filled as repeated p-values are asked for, so
    later calls for the same looks start next to (or at) their answer."""
    return {}


def _last_bound(
    fractions: tuple[float, ...], spending: str, rho: float, two_sided: bool, q: float
) -> float:
    nodes = _level_nodes(fractions, spending, rho, two_sided)
    if q not in nodes:
        sides = 2.0 if two_sided else 1.0
        level = sides * float(special.ndtr(-q))
        # the uncached computation, so that the bounds cache keeps the designs in use
        nodes[q] = compute_bounds(fractions, level, spending, rho, two_sided)[-1]
    return nodes[q]


def _secant_slope(previous: tuple[float, float] | None, q: float, c: float) -> float:
    """Slope of c(q) through ``previous`` and (q, c); 1 (a single look's) when there is no
    previous point or the slope is implausible (outside (0.2, 5))."""
    if previous is None or previous[0] == q:
        return 1.0
    slope = (c - previous[1]) / (q - previous[0])
    return slope if 0.2 < slope < 5.0 else 1.0


def _warm_start(
    nodes: dict[float, float], stat: float
) -> tuple[float, tuple[float, float] | None, bool]:
    """The first guess from the designs computed before for the same looks: (guess, the point
    the secant continues from, whether the guess is already the answer)."""
    if not nodes:
        return stat, None, False
    near = sorted(nodes, key=lambda q: abs(nodes[q] - stat))[:2]
    other = (near[1], nodes[near[1]]) if len(near) == 2 else None
    step = (stat - nodes[near[0]]) / _secant_slope(other, near[0], nodes[near[0]])
    if abs(step) <= _Q_TOLERANCE:  # a design computed before is (next to) the answer
        return near[0] + step, None, True
    previous = (near[0], nodes[near[0]]) if len(near) == 2 else None
    return near[0] + step, previous, False


def _solve_level(
    stat: float, fractions: tuple[float, ...], spending: str, rho: float, two_sided: bool
) -> float:
    """The q (normal quantile of the level) at which the last look's bound equals ``stat``.

    The bound c(q) is increasing and close to q + constant (equal to q for a single look), so
    a secant iteration kept inside a bracket converges in two or three designs, each a full
    recursion over the looks; designs computed before for the same looks serve as start."""
    sides = 2.0 if two_sided else 1.0
    q_min = float(-special.ndtri(_P_SOLVED_MAX / sides))
    q_max = float(-special.ndtri(_P_SOLVED_MIN / sides))
    nodes = _level_nodes(fractions, spending, rho, two_sided)

    def bound(q: float) -> float:
        return _last_bound(fractions, spending, rho, two_sided, q)

    left = max((q for q, c in nodes.items() if c <= stat), default=-math.inf)  # c(left) <= stat
    right = min((q for q, c in nodes.items() if c > stat), default=math.inf)  # stat < c(right)
    guess, previous, done = _warm_start(nodes, stat)
    if done:
        return guess
    for _ in range(30):
        if not left < guess < right:
            guess = 0.5 * (left + right) if math.isfinite(left + right) else guess
            guess = min(max(guess, left + 1e-3), right - 1e-3)
        if guess >= q_max:  # beyond the smallest level solved: constant offset from there
            c = bound(q_max)
            if c <= stat:
                return q_max + (stat - c)
            right, guess = q_max, 0.5 * (max(left, q_min) + q_max)
            continue
        if guess <= q_min:  # above the largest level solved: constant offset from there
            c = bound(q_min)
            if c > stat:
                return q_min + (stat - c)
            left, guess = q_min, 0.5 * (q_min + min(right, q_max))
            continue
        c = bound(guess)
        left, right = (guess, right) if c <= stat else (left, guess)
        step = (stat - c) / _secant_slope(previous, guess, c)
        if abs(step) <= _Q_TOLERANCE:
            return guess + step
        previous = (guess, c)
        guess += step
        if right - left <= _Q_TOLERANCE:
            return 0.5 * (left + right)
    return guess


def repeated_p_value(
    z: float,
    fractions: Sequence[float],
    alpha: float = 0.05,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    two_sided: bool = True,
) -> float:
    """Repeated p-value (Jennison & Turnbull section 9.1): the smallest level at which the
    design's bound at the current (last) look is crossed, the earlier looks' bounds being
    recomputed at that level.

    Solved, not interpolated, for levels between 1e-18 and 0.5 (a secant iteration on the
    level's normal quantile; each step is one design, about 0.2 s for 100 looks, and designs
    are kept per set of looks for later calls). Consistent with the bounds by construction:
    p < alpha exactly when |z| >= efficacy_bounds(fractions, alpha, ...)[-1]. Beyond 0.5
    and below 1e-18 the level's normal quantile is taken at a constant offset from the
    statistic (the offset at the end of the solved range): a smooth, monotone continuation,
    capped at 1 and never 0 for a finite statistic; 0 only for an infinite one.
    ``z`` is signed for one-sided designs (upper side), |z| is used when two-sided.
    """
    fractions = check_fractions(fractions)
    alpha, rho, two_sided = float(alpha), float(rho), bool(two_sided)
    stat = abs(z) if two_sided else float(z)
    if math.isnan(stat):
        return 1.0
    c_alpha = efficacy_bounds(fractions, alpha, spending, rho, two_sided)[-1]
    if not math.isfinite(c_alpha):  # nothing left to spend at this look
        return 1.0
    if stat == math.inf:
        return 0.0
    if stat == -math.inf:
        return 1.0
    return _repeated_cached(stat, fractions, alpha, spending, rho, two_sided, c_alpha)


@lru_cache(maxsize=4096)
def _repeated_cached(
    stat: float,
    fractions: tuple[float, ...],
    alpha: float,
    spending: str,
    rho: float,
    two_sided: bool,
    c_alpha: float,
) -> float:
    sides = 2.0 if two_sided else 1.0
    nodes = _level_nodes(fractions, spending, rho, two_sided)
    q_alpha = float(-special.ndtri(alpha / sides))
    nodes.setdefault(q_alpha, c_alpha)
    q = _solve_level(stat, fractions, spending, rho, two_sided)
    p = min(sides * float(special.ndtr(-q)), 1.0)
    # exact agreement with the decision rule |z| >= bound (the solve is exact up to ~1e-8)
    if stat >= c_alpha:
        return max(min(p, math.nextafter(alpha, 0.0)), 5e-324)
    return max(p, alpha)
