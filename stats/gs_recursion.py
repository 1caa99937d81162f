"""The Armitage-McPherson-Rowe recursion: first-crossing probabilities of B(t) at the looks.

Armitage, McPherson & Rowe (1969), "Repeated significance tests on accumulating data", JRSS A
132; Jennison & Turnbull (2000), chapter 19. On the Brownian-motion scale B(t) = Z_t sqrt(t),
the sub-density of paths not yet stopped is carried on a grid, treated as piecewise linear, and
convolved with the Gaussian increment in closed form, so closely spaced looks stay accurate.

Robustness: the lattice is refined at small t so that it always resolves B(t); a look whose
bound lies beyond the tracked range truncates nothing and leaves the sub-density as it was (the
next Gaussian increment is then taken from the earlier look, which is exact); zero-width
segments get slope 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

# Lattice spacing on the B scale at the fine level (standard deviations at t = 1). The
# piecewise-linear recursion is second order in the spacing, so bounds are Richardson-
# extrapolated from steps h and 2 h: c = c_h + (c_h - c_2h) / 3. Checked against h / 4: within
# 1e-6 for 5 looks, 2e-5 for 100. Below t = 0.01 the spacing is halved as often as needed to
# keep at least 10 lattice points per standard deviation of B(t).
_GRID_STEP = 0.01
_POINTS_PER_SD = 10.0
TAIL_SDS = 10.0  # density beyond 10 sd of B(t) is below 1e-22 and is ignored
# Gaussian increments are cut at 14 of their own sd: Phi(-14) < 1e-44, far below any
# probability the recursion is asked for (repeated p-values go down to 1e-17).
_KERNEL_SDS = 14.0
_CHUNK = 256  # rows per block of the dense convolution, to bound memory
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


class Paths:
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
        top, bottom = centre + TAIL_SDS * sd, centre - TAIL_SDS * sd
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
