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

Robustness: any strictly increasing sequence of positive fractions is accepted (1e-9 and
0.5, 0.5000001 included). The lattice is refined at small t so that it always resolves B(t);
a look whose bound lies beyond the tracked range truncates nothing and leaves the sub-density
as it was (the next Gaussian increment is then taken from the earlier look, which is exact);
zero-width segments get slope 0; and bounds solve log P(c) = log(increment) by a Newton
iteration kept inside a bracket, so no NaN can reach the root finder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

SPENDING_FUNCTIONS = ("obrien_fleming", "power")

# Lattice spacing on the B scale at the fine level (standard deviations at t = 1). The
# piecewise-linear recursion is second order in the spacing, so bounds are Richardson-
# extrapolated from steps h and 2 h: c = c_h + (c_h - c_2h) / 3. Checked against h / 4: within
# 1e-6 for 5 looks, 2e-5 for 100. Below t = 0.01 the spacing is halved as often as needed to
# keep at least 10 lattice points per standard deviation of B(t).
_GRID_STEP = 0.01
_POINTS_PER_SD = 10.0
_TAIL_SDS = 10.0  # density beyond 10 sd of B(t) is below 1e-22 and is ignored
# Gaussian increments are cut at 14 of their own sd: Phi(-14) < 1e-44, far below any
# probability the recursion is asked for (repeated p-values go down to 1e-17).
_KERNEL_SDS = 14.0
_TINY = 1e-250  # increments below this get their marginal bound (log P would underflow)
_CHUNK = 256  # rows per block of the dense convolution, to bound memory


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
    per_side = 2.0 * float(special.ndtr(special.ndtri(side_alpha / 2.0) / math.sqrt(t)))
    return 2.0 * per_side if two_sided else per_side


_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _phi_mass(wp: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Phi(wq) - Phi(wp) for wp <= wq, taken in the tail where it is small, so no precision is
    lost: with sign -1 where wp > 0 it is Phi(-wp) - Phi(-wq)."""
    sign = np.where(wp > 0, -1.0, 1.0)
    return sign * (special.ndtr(sign * wq) - special.ndtr(sign * wp))


def _point_terms(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At points w: Phi(w), phi(w) and the antiderivatives F0(w) = w Phi(w) + phi(w) (F0' = Phi)
    and F1(w) = ((w^2 - 1) Phi(w) + w phi(w)) / 2 (F1' = w Phi), used to integrate a linear
    function against Phi in closed form; evaluated once per point, since neighbouring
    segments share their end point."""
    tail = special.ndtr(-np.abs(w))  # the smaller of Phi(w) and 1 - Phi(w)
    cdf = np.where(w <= 0, tail, 1.0 - tail)
    pdf = np.exp(-0.5 * w * w) / _SQRT_2PI
    return cdf, pdf, w * cdf + pdf, 0.5 * ((w * w - 1.0) * cdf + w * pdf)


def _pdf(w: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * w * w) / _SQRT_2PI


def _smooth_direct(
    x: np.ndarray, p: np.ndarray, q: np.ndarray, c0: np.ndarray, c1: np.ndarray, s: float, mu: float
) -> np.ndarray:
    """Integral of (c0 + c1 u) phi((x - u - mu) / s) / s du over each segment [p, q], summed:
    with w = (u + mu - x) / s it is (c0 + c1 (x - mu)) [Phi(w)] - c1 s [phi(w)]. Computed in
    blocks of rows so that large grids do not need large temporary arrays."""
    out = np.zeros(len(x))
    if len(p) == 0:
        return out
    for start in range(0, len(x), _CHUNK):
        xs = x[start : start + _CHUNK, None]
        wp = (p[None, :] + mu - xs) / s
        wq = (q[None, :] + mu - xs) / s
        mass = (c0 + c1 * (xs - mu)) * _phi_mass(wp, wq)
        out[start : start + _CHUNK] = (mass - c1 * s * (_pdf(wq) - _pdf(wp))).sum(axis=1)
    return out


def _lattice_step(t: float, scale: float) -> float:
    """Lattice spacing at time t: ``scale`` x 0.01, halved until it is at most sd(B(t)) / 10.
    Depends on t only through a power of two, so the h and 2 h grids stay exactly 2 apart."""
    halvings = max(0, math.ceil(math.log2(_GRID_STEP * _POINTS_PER_SD / math.sqrt(t)) - 1e-9))
    return scale * _GRID_STEP / 2.0**halvings


class _Grid:
    """Points lo < k h < hi (k integer) plus both ends: a lattice, so that the Gaussian
    convolution between two looks is a discrete convolution on the lattice part. Lattice points
    closer than h / 1000 to an end are left out, so no segment is (nearly) of zero width unless
    lo == hi."""

    def __init__(self, lo: float, hi: float, step: float) -> None:
        self.step = step
        gap = 1e-3 * step
        first = math.floor(lo / step) + 1  # lattice index of the first interior point
        if first * step < lo + gap:
            first += 1
        last = math.ceil(hi / step) - 1
        if last * step > hi - gap:
            last -= 1
        self.first = first
        self.count = max(last - first + 1, 0)
        lattice = (first + np.arange(self.count)) * step
        self.points = np.concatenate([[lo], lattice, [hi]])


class _Paths:
    """Sub-density of B(t) over paths that have not crossed a bound yet (piecewise linear).

    States: a point mass at 0 at time 0 (``grid`` None), a density on a grid at time ``t``, or
    ``empty`` once every path has crossed."""

    def __init__(self, drift: float, scale: float = 1.0) -> None:
        self.drift = drift
        self.scale = scale
        self.t = 0.0
        self.grid: _Grid | None = None
        self.f = np.zeros(0)
        self.empty = False
        self._seg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Segments [p, q] with the density c0 + c1 u on each (zero-width ones get slope 0)."""
        if self._seg is None:
            assert self.grid is not None
            u = self.grid.points
            p, q = u[:-1], u[1:]
            width = q - p
            rise = self.f[1:] - self.f[:-1]
            slope = np.divide(rise, width, out=np.zeros_like(rise), where=width > 0)
            self._seg = (p, q, self.f[:-1] - slope * p, slope)
        return self._seg

    def tails(self, t: float, a: float, two_sided: bool) -> tuple[float, float, float]:
        """At a look at time t with bound a (B scale): P(first crossing of B >= a), P(of
        B <= -a, two-sided only) and the sub-density of B(t) at a plus at -a (two-sided), i.e.
        minus the derivative of the total crossing probability in a."""
        if self.empty:
            return 0.0, 0.0, 0.0
        s = math.sqrt(t - self.t)
        mu = self.drift * (t - self.t)
        if self.grid is None:
            up = float(special.ndtr((mu - a) / s))
            dens = math.exp(-0.5 * ((a - mu) / s) ** 2) / (_SQRT_2PI * s)
            if not two_sided:
                return up, 0.0, dens
            low = float(special.ndtr((-a - mu) / s))
            return up, low, dens + math.exp(-0.5 * ((a + mu) / s) ** 2) / (_SQRT_2PI * s)
        p, q, c0, c1 = self._segments()
        points = self.grid.points
        reach = _KERNEL_SDS * s
        # upper: integral of f(u) Phi((u - m) / s) du with m = a - mu, over the segments that
        # reach within 14 s of m (w = (u - m) / s); the density at a is the integral of
        # f(u) phi((u - m) / s) / s du. Both from Phi, phi, F0, F1 at the grid points.
        m = a - mu
        i = int(np.searchsorted(q, m - reach))
        cdf, pdf, f0, f1 = _point_terms((points[i:] - m) / s)
        k0, k1 = c0[i:] + c1[i:] * m, c1[i:]
        up = s * float((k0 * np.diff(f0) + k1 * s * np.diff(f1)).sum())
        dens = float((k0 * np.diff(cdf) - k1 * s * np.diff(pdf)).sum())
        low = 0.0
        if two_sided:
            # lower: integral of f(u) Phi((m - u) / s) du with m = -a - mu (v = (m - u) / s,
            # decreasing along the grid); P(B <= -a) = s [k0 (F0(v_p) - F0(v_q)) - ...]
            m = -a - mu
            j = int(np.searchsorted(p, m + reach, side="right"))
            cdf, pdf, f0, f1 = _point_terms((m - points[: j + 1]) / s)
            k0, k1 = c0[:j] + c1[:j] * m, c1[:j]
            low = s * float((-k0 * np.diff(f0) + k1 * s * np.diff(f1)).sum())
            dens += float((-k0 * np.diff(cdf) - k1 * s * np.diff(pdf)).sum())
        return max(up, 0.0), max(low, 0.0), max(dens, 0.0)

    def crossing(self, t: float, a: float, two_sided: bool) -> tuple[float, float]:
        """P(first crossing of B >= a (and of B <= -a when two-sided) at a look at time t)."""
        up, low, _ = self.tails(t, a, two_sided)
        return up, low

    def advance(self, t: float, a: float, two_sided: bool) -> None:
        """Move to a look at time t with bound a (B scale), keeping paths that did not cross."""
        if self.empty:
            self.t = t
            return
        centre, sd = self.drift * t, math.sqrt(t)
        top, bottom = centre + _TAIL_SDS * sd, centre - _TAIL_SDS * sd
        hi = min(a, top)
        lo = max(-a, bottom) if two_sided else bottom
        if hi >= top and lo <= bottom:
            # nothing is stopped within the tracked range: the sub-density at t is the current
            # one convolved with the increment, so keep the current state (exact, and no grid
            # has to resolve a B(t) narrower than the lattice)
            return
        if hi <= lo:  # every path has crossed
            self.empty, self.grid, self.f, self._seg, self.t = True, None, np.zeros(0), None, t
            return
        s = math.sqrt(t - self.t)
        mu = self.drift * (t - self.t)
        new = _Grid(lo, hi, _lattice_step(t, self.scale))
        first = self.grid is None
        f_new = _pdf((new.points - mu) / s) / s if first else self._convolve(new, s, mu)
        self.grid, self.f, self.t, self._seg = new, np.maximum(f_new, 0.0), t, None

    def _convolve(self, new: _Grid, s: float, mu: float) -> np.ndarray:
        """Density at the new grid points: the old piecewise-linear density convolved with the
        N(mu, s^2) increment, exactly. Lattice-to-lattice terms depend only on the index
        difference, so they are a discrete correlation (with the kernel cut at 14 s); the end
        segments and end points are added directly. Grids of different spacing (t crossed a
        refinement level) are convolved directly."""
        old = self.grid
        assert old is not None
        p, q, c0, c1 = self._segments()
        x = new.points
        if old.count < 2 or new.count < 1 or old.step != new.step:
            return _smooth_direct(x, p, q, c0, c1, s, mu)
        ends = np.array([0, len(p) - 1])  # the two segments touching lo and hi
        out = _smooth_direct(x, p[ends], q[ends], c0[ends], c1[ends], s, mu)
        mid = slice(1, len(p) - 1)  # uniform segments between lattice points
        edge_rows = np.array([0, len(x) - 1])
        out[edge_rows] += _smooth_direct(x[edge_rows], p[mid], q[mid], c0[mid], c1[mid], s, mu)
        # lattice rows i (x_i = (new.first + i) h) against uniform segments j
        # (p_j = (old.first + j) h): with e = j - i, w_p = ((d + e) h + mu) / s, d the offset
        n_seg, n_x, h = old.count - 1, new.count, old.step
        d = old.first - new.first
        reach = _KERNEL_SDS * s
        e_lo = max(-(n_x - 1), math.floor((-reach - mu) / h) - d - 1)
        e_hi = min(n_seg - 1, math.ceil((reach - mu) / h) - d)
        if e_hi < e_lo:
            return out
        e = np.arange(e_lo, e_hi + 2)
        w = ((d + e) * h + mu) / s
        d_phi = _phi_mass(w[:-1], w[1:])  # kernel at e = e_lo .. e_hi
        d_pdf = _pdf(w[1:]) - _pdf(w[:-1])
        # sum_e kernel[e] c_{i + e}: the coefficients c_j for j = i + e, zero outside 0..n_seg-1
        span = n_x + e_hi - e_lo
        j = np.arange(e_lo, e_lo + span)
        inside = (j >= 0) & (j < n_seg)
        k0, k1 = np.zeros(span), np.zeros(span)
        k0[inside] = c0[mid][j[inside]]
        k1[inside] = c1[mid][j[inside]]
        s0 = np.correlate(k0, d_phi, "valid")
        s1 = np.correlate(k1, d_phi, "valid")
        s2 = np.correlate(k1, d_pdf, "valid")
        xl = x[1:-1]
        out[1:-1] += s0 + (xl - mu) * s1 - s * s2
        return out


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in fractions)
    if (
        not out
        or not all(math.isfinite(t) for t in out)
        or out[0] <= 0
        or any(b <= a for a, b in zip(out, out[1:], strict=False))
    ):
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
    lo = 0.0 if two_sided else -_TAIL_SDS - 2.0  # P(lo) >= increment: every alive path crosses
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
    paths = _Paths(drift=0.0, scale=scale)
    bounds: list[float] = []
    spent = 0.0
    for t in fractions:
        target = spent_alpha(t, alpha, spending, rho, two_sided)
        c = _solve_bound(paths, t, target - spent, two_sided)
        bounds.append(c)
        spent = max(spent, target)
        paths.advance(t, c * math.sqrt(t), two_sided)
    return bounds


def _check_design(alpha: float, spending: str) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"unknown spending {spending!r}; expected one of {SPENDING_FUNCTIONS}")


@lru_cache(maxsize=512)
def _bounds_cached(
    fractions: tuple[float, ...], alpha: float, spending: str, rho: float, two_sided: bool
) -> tuple[float, ...]:
    _check_design(alpha, spending)
    fine = _bounds_at_step(fractions, alpha, spending, rho, two_sided, 1.0)
    coarse = _bounds_at_step(fractions, alpha, spending, rho, two_sided, 2.0)
    # no bound exceeds its marginal one (first crossings are a subset of crossings)
    caps = _marginal_bounds(fractions, alpha, spending, rho, two_sided)
    return tuple(min(_richardson(f, c), cap) for f, c, cap in zip(fine, coarse, caps, strict=True))


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
        _check_fractions(fractions), float(alpha), spending, float(rho), bool(two_sided)
    )


def _crossings_at_step(
    fractions: tuple[float, ...],
    bounds: Sequence[float],
    drift: float,
    two_sided: bool,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    paths = _Paths(drift=drift, scale=scale)
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
    fractions = _check_fractions(fractions)
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
        nodes[q] = _bounds_cached.__wrapped__(fractions, level, spending, rho, two_sided)[-1]
    return nodes[q]


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

    below = [q for q, c in nodes.items() if c <= stat]  # levels too large: bound not above stat
    above = [q for q, c in nodes.items() if c > stat]
    left = max(below, default=-math.inf)  # c(left) <= stat < c(right)
    right = min(above, default=math.inf)
    previous: tuple[float, float] | None = None
    guess = stat
    if nodes:
        near = sorted(nodes, key=lambda q: abs(nodes[q] - stat))[:2]
        slope = 1.0
        if len(near) == 2 and near[0] != near[1]:
            slope = (nodes[near[0]] - nodes[near[1]]) / (near[0] - near[1])
            slope = slope if 0.2 < slope < 5.0 else 1.0
        step = (stat - nodes[near[0]]) / slope
        if abs(step) <= _Q_TOLERANCE:  # a design computed before is (next to) the answer
            return near[0] + step
        guess = near[0] + step
        if len(near) == 2:
            previous = (near[0], nodes[near[0]])
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
        if c <= stat:
            left = guess
        else:
            right = guess
        slope = 1.0
        if previous is not None and previous[0] != guess:
            slope = (c - previous[1]) / (guess - previous[0])
            if not 0.2 < slope < 5.0:
                slope = 1.0
        step = (stat - c) / slope
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
    fractions = _check_fractions(fractions)
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
