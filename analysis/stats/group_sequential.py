"""Group-sequential efficacy bounds by Lan-DeMets alpha spending over the looks actually taken.

Lan & DeMets (1983), "Discrete sequential boundaries for clinical trials", Biometrika 70:
the error spent by information fraction t is alpha(t); at each look the bound is chosen so that
P(first crossing at this look | H0) = alpha(t_k) - alpha(t_{k-1}), under the canonical joint
normal distribution of the look statistics (Jennison & Turnbull 2000, "Group Sequential Methods
with Applications to Clinical Trials", section 3.1 and chapter 19). The probabilities come from
the Armitage, McPherson & Rowe (1969) recursion on the Brownian-motion scale B(t) = Z_t sqrt(t):
the sub-density of paths not yet stopped is carried on a grid, treated as piecewise linear, and
convolved with the Gaussian increment in closed form, so closely spaced looks stay accurate.

Spending functions, for a two-sided symmetric test at level alpha (each side alpha / 2):
- "obrien_fleming" (Lan-DeMets O'Brien-Fleming type), per side
  alpha_1(t) = 2 - 2 Phi(z_{1 - alpha_1 / 2} / sqrt(t)) with alpha_1 = alpha / 2;
  this is the convention of gsDesign ``sfLDOF`` and of the published table
  (5 equal looks, alpha 0.05: 4.877, 3.357, 2.680, 2.290, 2.031);
- "power" (Kim & DeMets 1987 / Jennison & Turnbull section 7.2.1): alpha(t) = alpha t^rho.
One-sided designs (``two_sided=False``) spend alpha on the upper side only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats
from scipy.interpolate import PchipInterpolator

SPENDING_FUNCTIONS = ("obrien_fleming", "power")

# Grid spacing on the B scale (standard deviations at t = 1). The piecewise-linear recursion
# is second order in the spacing, so bounds are Richardson-extrapolated from steps h and 2 h:
# c = c_h + (c_h - c_2h) / 3. Checked against h / 4: within 1e-6 for 5 looks, 2e-5 for 100.
_GRID_STEP = 0.01
_TAIL_SDS = 10.0  # density beyond 10 sd of B(t) is below 1e-22 and is ignored
_TINY = 1e-12  # below this, a look's increment is set by its marginal bound (see _solve_bound)


def spent_alpha(
    t: float,
    alpha: float,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    two_sided: bool = True,
) -> float:
    """Cumulative type I error alpha(t) allowed by information fraction t (capped at 1)."""
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"unknown spending {spending!r}; expected one of {SPENDING_FUNCTIONS}")
    t = min(max(t, 0.0), 1.0)
    if t <= 0.0:
        return 0.0
    if spending == "power":
        return alpha * t**rho
    side_alpha = alpha / 2.0 if two_sided else alpha
    per_side = 2.0 * float(stats.norm.sf(stats.norm.isf(side_alpha / 2.0) / math.sqrt(t)))
    return 2.0 * per_side if two_sided else per_side


_SQRT_2PI = math.sqrt(2.0 * math.pi)


# Antiderivatives used to integrate a linear function against Phi in closed form.
def _f0(w: np.ndarray) -> np.ndarray:  # d/dw = Phi(w)
    return w * special.ndtr(w) + np.exp(-0.5 * w * w) / _SQRT_2PI


def _f1(w: np.ndarray) -> np.ndarray:  # d/dw = w Phi(w)
    return 0.5 * ((w * w - 1.0) * special.ndtr(w) + w * np.exp(-0.5 * w * w) / _SQRT_2PI)


def _phi_mass(wp: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Phi(wq) - Phi(wp), taken in the tail where it is small, so no precision is lost."""
    return np.where(
        wp > 0, special.ndtr(-wp) - special.ndtr(-wq), special.ndtr(wq) - special.ndtr(wp)
    )


def _pdf(w: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * w * w) / _SQRT_2PI


def _smooth_direct(
    x: np.ndarray, p: np.ndarray, q: np.ndarray, c0: np.ndarray, c1: np.ndarray, s: float, mu: float
) -> np.ndarray:
    """Integral of (c0 + c1 u) phi((x - u - mu) / s) / s du over each segment [p, q], summed:
    with w = (u + mu - x) / s it is (c0 + c1 (x - mu)) [Phi(w)] - c1 s [phi(w)]."""
    wp = (p[None, :] + mu - x[:, None]) / s
    wq = (q[None, :] + mu - x[:, None]) / s
    mass = (c0 + c1 * (x[:, None] - mu)) * _phi_mass(wp, wq)
    return (mass - c1 * s * (_pdf(wq) - _pdf(wp))).sum(axis=1)


class _Grid:
    """Points lo < k h < hi (k integer) plus both ends: a lattice, so that the Gaussian
    convolution between two looks is a discrete convolution on the lattice part."""

    def __init__(self, lo: float, hi: float, step: float) -> None:
        self.step = step
        self.first = math.floor(lo / step) + 1  # lattice index of the first interior point
        last = math.ceil(hi / step) - 1
        self.count = max(last - self.first + 1, 0)
        lattice = (self.first + np.arange(self.count)) * step
        self.points = np.concatenate([[lo], lattice, [hi]])


class _Paths:
    """Sub-density of B(t) over paths that have not crossed a bound yet (piecewise linear)."""

    def __init__(self, drift: float, step: float = _GRID_STEP) -> None:
        self.drift = drift
        self.step = step
        self.t = 0.0
        self.grid: _Grid | None = None  # None = point mass at 0 (before the first look)
        self.f = np.zeros(0)

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        assert self.grid is not None
        u = self.grid.points
        p, q = u[:-1], u[1:]
        slope = (self.f[1:] - self.f[:-1]) / (q - p)
        return p, q, self.f[:-1] - slope * p, slope

    def crossing(self, t: float, a: float, two_sided: bool) -> tuple[float, float]:
        """P(first crossing of B >= a (and of B <= -a when two-sided) at a look at time t)."""
        s = math.sqrt(t - self.t)
        mu = self.drift * (t - self.t)
        if self.grid is None:
            up = float(special.ndtr((mu - a) / s))
            return up, float(special.ndtr((-a - mu) / s)) if two_sided else 0.0
        p, q, c0, c1 = self._segments()
        # upper: integral of f(u) Phi((u - m) / s) du, m = a - mu
        m = a - mu
        wp, wq = (p - m) / s, (q - m) / s
        up = s * ((c0 + c1 * m) * (_f0(wq) - _f0(wp)) + c1 * s * (_f1(wq) - _f1(wp)))
        low_total = 0.0
        if two_sided:
            # lower: integral of f(u) Phi(-(u - m) / s) du, m = -a - mu
            m = -a - mu
            vp, vq = -(p - m) / s, -(q - m) / s
            low = s * ((c0 + c1 * m) * (_f0(vp) - _f0(vq)) - c1 * s * (_f1(vp) - _f1(vq)))
            low_total = max(float(low.sum()), 0.0)
        return max(float(up.sum()), 0.0), low_total

    def advance(self, t: float, a: float, two_sided: bool) -> None:
        """Move to a look at time t with bound a (B scale), keeping paths that did not cross."""
        s = math.sqrt(t - self.t)
        mu = self.drift * (t - self.t)
        centre, sd = self.drift * t, math.sqrt(t)
        hi = min(a, centre + _TAIL_SDS * sd)
        lo = max(-a, centre - _TAIL_SDS * sd) if two_sided else centre - _TAIL_SDS * sd
        if hi <= lo:  # every path has crossed
            hi = lo + self.step
        new = _Grid(lo, hi, self.step)
        first_look = self.grid is None
        f_new = _pdf((new.points - mu) / s) / s if first_look else self._convolve(new, s, mu)
        self.grid, self.f, self.t = new, np.maximum(f_new, 0.0), t

    def _convolve(self, new: _Grid, s: float, mu: float) -> np.ndarray:
        """Density at the new grid points: the old piecewise-linear density convolved with the
        N(mu, s^2) increment, exactly. Lattice-to-lattice terms depend only on the index
        difference, so they are a discrete correlation; the end segments are added directly."""
        old = self.grid
        assert old is not None
        p, q, c0, c1 = self._segments()
        x = new.points
        if old.count < 2 or new.count < 1:
            return _smooth_direct(x, p, q, c0, c1, s, mu)
        ends = np.array([0, len(p) - 1])  # the two segments touching lo and hi
        out = _smooth_direct(x, p[ends], q[ends], c0[ends], c1[ends], s, mu)
        mid = slice(1, len(p) - 1)  # uniform segments between lattice points
        edge_rows = np.array([0, len(x) - 1])
        out[edge_rows] += _smooth_direct(x[edge_rows], p[mid], q[mid], c0[mid], c1[mid], s, mu)
        # lattice rows i (x_i = (new.first + i) h) against uniform segments j
        # (p_j = (old.first + j) h): w_p = ((old.first - new.first + j - i) h + mu) / s
        n_seg, n_x, h = old.count - 1, new.count, old.step
        e = np.arange(-(n_x - 1), n_seg + 1)
        w = ((old.first - new.first + e) * h + mu) / s
        d_phi = _phi_mass(w[:-1], w[1:])  # indexed by e = j - i in [-(n_x - 1), n_seg - 1]
        d_pdf = _pdf(w[1:]) - _pdf(w[:-1])
        k0, k1 = c0[mid], c1[mid]
        # np.correlate(kernel, c, "valid")[k] = sum_j kernel[j + k] c_j, with k = n_x - 1 - i
        s0 = np.correlate(d_phi, k0, "valid")[::-1]
        s1 = np.correlate(d_phi, k1, "valid")[::-1]
        s2 = np.correlate(d_pdf, k1, "valid")[::-1]
        xl = x[1:-1]
        out[1:-1] += s0 + (xl - mu) * s1 - s * s2
        return out


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in fractions)
    if not out or out[0] <= 0 or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"information fractions must be positive and increasing, got {out}")
    return out


def look_fractions(previous: Sequence[float], current: float) -> tuple[float, ...]:
    """The looks to evaluate at a look with information fraction ``current``.

    Earlier looks at or beyond the current fraction (a repeated look at the same data) and
    non-positive ones are dropped. Once the planned sample is reached (fraction >= 1), the
    current look is the final analysis: earlier looks at fraction >= 1 are dropped, so the
    remaining alpha is spent here instead of leaving later looks with nothing to spend.
    """
    if current <= 0:
        raise ValueError(f"current information fraction must be positive, got {current}")
    earlier = sorted({float(t) for t in previous if 0 < t < current - 1e-12})
    if current >= 1:
        earlier = [t for t in earlier if t < 1]
    return (*earlier, float(current))


def _solve_bound(paths: _Paths, t: float, increment: float, two_sided: bool) -> float:
    """z-bound at time t whose first-crossing probability under H0 equals ``increment``."""
    sides = 2.0 if two_sided else 1.0
    if increment <= 0:
        return math.inf
    marginal = float(stats.norm.isf(increment / sides))
    # Earlier crossings are negligible next to the increment: the marginal bound is exact to
    # within 1e-12 of total error, and the recursion cannot resolve smaller probabilities.
    if increment < _TINY or paths.grid is None:
        return marginal
    root_t = math.sqrt(t)

    def excess(c: float) -> float:
        up, low = paths.crossing(t, c * root_t, two_sided)
        return (up + low) / increment - 1.0

    if excess(0.0) <= 0:  # less probability left than allowed: stop at any z
        return 0.0
    if excess(marginal) >= 0:
        return marginal
    return float(optimize.brentq(excess, 0.0, marginal, xtol=1e-10, rtol=1e-12))


def _bounds_at_step(
    fractions: tuple[float, ...],
    alpha: float,
    spending: str,
    rho: float,
    two_sided: bool,
    step: float,
) -> list[float]:
    paths = _Paths(drift=0.0, step=step)
    bounds: list[float] = []
    spent = 0.0
    for t in fractions:
        target = spent_alpha(t, alpha, spending, rho, two_sided)
        c = _solve_bound(paths, t, target - spent, two_sided)
        bounds.append(c)
        spent = max(spent, target)
        paths.advance(t, c * math.sqrt(t), two_sided)
    return bounds


@lru_cache(maxsize=512)
def _bounds_cached(
    fractions: tuple[float, ...], alpha: float, spending: str, rho: float, two_sided: bool
) -> tuple[float, ...]:
    fine = _bounds_at_step(fractions, alpha, spending, rho, two_sided, _GRID_STEP)
    coarse = _bounds_at_step(fractions, alpha, spending, rho, two_sided, 2 * _GRID_STEP)
    return tuple(
        f + (f - c) / 3.0 if math.isfinite(f) and math.isfinite(c) else f
        for f, c in zip(fine, coarse, strict=True)
    )


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
    one-sided). Cached: the same looks are evaluated for every metric of a run.
    """
    return _bounds_cached(
        _check_fractions(fractions), float(alpha), spending, float(rho), two_sided
    )


def _crossings_at_step(
    fractions: tuple[float, ...],
    bounds: Sequence[float],
    drift: float,
    two_sided: bool,
    step: float,
) -> tuple[np.ndarray, np.ndarray]:
    paths = _Paths(drift=drift, step=step)
    upper, lower = [], []
    for t, c in zip(fractions, bounds, strict=True):
        a = c * math.sqrt(t) if math.isfinite(c) else math.inf
        up, low = paths.crossing(t, a, two_sided) if math.isfinite(a) else (0.0, 0.0)
        upper.append(up)
        lower.append(low)
        paths.advance(t, a if math.isfinite(a) else 1e6, two_sided)
    return np.array(upper), np.array(lower)


def crossing_probabilities(
    fractions: Sequence[float], bounds: Sequence[float], drift: float, two_sided: bool = True
) -> tuple[list[float], list[float]]:
    """P(first crossing at each look) of the upper and lower bound when B(t) = drift t + W(t),
    i.e. when E[Z_k] = drift sqrt(t_k) (Jennison & Turnbull section 19.2); Richardson-
    extrapolated over grid steps h and 2 h like the bounds."""
    fractions = _check_fractions(fractions)
    up_h, low_h = _crossings_at_step(fractions, bounds, drift, two_sided, _GRID_STEP)
    up_2h, low_2h = _crossings_at_step(fractions, bounds, drift, two_sided, 2 * _GRID_STEP)
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
    fractions = _check_fractions(fractions)
    bounds = efficacy_bounds(fractions, alpha, spending, rho, two_sided)
    scale = fractions[-1]
    z_alpha = float(stats.norm.isf(alpha / 2.0 if two_sided else alpha))
    theta_fixed = z_alpha + float(stats.norm.ppf(power))

    def shortfall(theta: float) -> float:
        upper, _ = crossing_probabilities(fractions, bounds, theta, two_sided)
        return sum(upper) - power

    theta = optimize.brentq(shortfall, theta_fixed * 0.5, theta_fixed * 3.0, xtol=1e-8)
    return float((theta / theta_fixed) ** 2 / scale)


@lru_cache(maxsize=128)
def _bound_table(
    fractions: tuple[float, ...], alpha: float, spending: str, rho: float, two_sided: bool
) -> PchipInterpolator | None:
    """The level as a monotone function of the last look's bound, over levels 1e-8 .. 0.999,
    with ``alpha`` itself as a node so that p < alpha exactly when the bound is crossed.
    Interpolated on the normal-quantile scale q = z_{1 - level / sides}, where q is nearly
    linear in the bound (exactly equal to it for a single look)."""
    sides = 2.0 if two_sided else 1.0
    levels = np.union1d(np.logspace(-8, math.log10(0.999), 25), [alpha])
    last = np.array(
        [_bounds_cached(fractions, float(a), spending, rho, two_sided)[-1] for a in levels]
    )
    finite = np.isfinite(last)
    order = np.argsort(last[finite])
    x = last[finite][order]
    y = stats.norm.isf(levels[finite][order] / sides)
    keep = np.concatenate([[True], np.diff(x) > 1e-12])
    if keep.sum() < 2:
        return None
    return PchipInterpolator(x[keep], y[keep], extrapolate=False)


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
    recomputed at that level. Floored at 1e-8; 1 when not crossed even at level 0.999.
    ``z`` is signed for one-sided designs (upper side), |z| is used when two-sided.
    """
    fractions = _check_fractions(fractions)
    stat = abs(z) if two_sided else z
    table = _bound_table(fractions, float(alpha), spending, float(rho), two_sided)
    if table is None:  # nothing left to spend at this look
        return 1.0
    lo_c, hi_c = float(table.x[0]), float(table.x[-1])
    if not math.isfinite(stat) or stat >= hi_c:
        return 1e-8
    if stat <= lo_c:
        return 1.0
    sides = 2.0 if two_sided else 1.0
    return float(min(sides * stats.norm.sf(float(table(stat))), 1.0))
