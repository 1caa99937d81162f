"""Time views of an effect, which decide nothing: the lift on one day's data, and a test for
novelty (an effect that fades with the days since each unit's first exposure).

**One day's effect** (``day_effect``), from the two arms' sufficient statistics of that day:
the absolute lift ``m_t - m_c`` with the fixed-horizon Welch interval (``fixed.t_test``), and the
relative lift ``(m_t - m_c) / m_c`` with its delta-method interval
``Var = s_t^2 / (m_c^2 n_t) + s_c^2 m_t^2 / (m_c^4 n_c)`` (``estimators.relative_effect``),
two-sided at ``alpha``: the fixed-horizon analyst view's formulas (docs/statistics.md sections
1 and 2). No CUPED (a day's value has no pre-exposure twin) and no correction for the number of
days: exploratory intervals.

**Novelty trend** (``novelty_trend``): the weighted least squares line through the per-day
relative lifts ``y_k`` against the day index ``x_k`` (days since first exposure), weights
``w_k = 1 / v_k`` (``v_k`` the delta-method variance of ``y_k``)::

    x_w = sum w x / sum w,   y_w = sum w y / sum w,   S = sum w (x - x_w)^2
    slope b = sum w (x - x_w)(y - y_w) / S,   intercept a = y_w - b x_w
    phi = max(1, sum w (y - a - b x)^2 / (K - 2)),   se(b) = sqrt(phi / S),   z = b / se(b)

``1 / S`` is the slope's variance when the ``v_k`` are the true sampling variances
(meta-regression with known variances, "fixed scale" in statsmodels' WLS); ``phi`` is the
multiplicative dispersion (Thompson & Sharp 1999, "Explaining heterogeneity in meta-analysis:
a comparison of methods", Stat Med 18:2693, section 3), kept at 1 or more so that day-to-day
variation beyond sampling error (day of week, news) widens the test and never narrows it, as
in the modified Knapp-Hartung adjustment (Roever, Knapp & Friede 2015, BMC Med Res Methodol
15:99). The p-value is the standard normal's: the ``v_k`` are taken as known, and ``phi``
only widens the test (a t reference on ``K - 2`` degrees of freedom on top of the floor would
leave the default 3-day window with 1 degree of freedom and almost no power; the simulation in
``stats.novelty_simulation`` shows the size holds). The slope is statsmodels'
``WLS(y, [1, x], weights=w).fit()``'s; its standard error is the larger of that fit's and the
``fit(cov_type="fixed scale")``'s.

"Fading" is a slope toward zero: negative when the weighted mean lift ``y_w`` is positive,
positive when it is negative. One-sided ``p = Phi(z sign(y_w))``. Choosing the side from
``y_w`` keeps the test's size: in WLS ``Cov(b, y_w) = sum_k c_k (w_k / sum w) v_k = 0`` (``c_k``
the slope's weights), so under normality the sign of ``y_w`` is independent of ``b`` and of the
residuals. The days' lifts share units (a unit counts on each of its days), which this
variance ignores; their positive correlation makes the test conservative (simulated).
``novelty_flags`` then controls the family (metrics x treatment arms) by Holm (1979).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from .estimators import SampleStats, absolute_effect, arm_estimate, relative_effect
from .fixed import t_test
from .multiple_testing import holm

MIN_DAYS = 3  # a slope and a residual dispersion (K - 2 >= 1 degrees of freedom)


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class DayEffect:
    """One day's comparison of a treatment arm with control; None where undefined."""

    control_n: int
    variant_n: int
    control_mean: float | None
    variant_mean: float | None
    lift_abs: float | None
    abs_ci_low: float | None
    abs_ci_high: float | None
    lift_rel: float | None
    ci_low: float | None  # relative lift, fixed-horizon, two-sided at alpha
    ci_high: float | None
    rel_variance: float | None  # Var(lift_rel) by the delta method: the novelty weights' 1 / w
    p_value: float | None  # two-sided, of the absolute difference


def day_effect(control: SampleStats, treatment: SampleStats, kind: str, alpha: float) -> DayEffect:
    """The effect on one day's data (module docstring); arms with fewer than 2 units, a zero
    variance or a zero control mean leave the affected numbers None."""
    if control.n < 2 or treatment.n < 2:
        c_mean = arm_estimate(control, kind).mean if control.n > 0 else None
        t_mean = arm_estimate(treatment, kind).mean if treatment.n > 0 else None
        return DayEffect(control.n, treatment.n, c_mean, t_mean, *[None] * 8)
    c, t = arm_estimate(control, kind), arm_estimate(treatment, kind)
    absolute = absolute_effect(c, t)
    abs_test = t_test(absolute, alpha) if absolute.usable else None
    rel = relative_effect(c, t)
    rel_test = t_test(rel, alpha) if rel is not None and rel.usable else None
    return DayEffect(
        control_n=control.n,
        variant_n=treatment.n,
        control_mean=_finite(c.mean),
        variant_mean=_finite(t.mean),
        lift_abs=_finite(absolute.estimate),
        abs_ci_low=_finite(abs_test.low) if abs_test else None,
        abs_ci_high=_finite(abs_test.high) if abs_test else None,
        lift_rel=_finite(rel.estimate) if rel is not None else None,
        ci_low=_finite(rel_test.low) if rel_test else None,
        ci_high=_finite(rel_test.high) if rel_test else None,
        rel_variance=_finite(rel.variance) if rel_test and rel is not None else None,
        p_value=_finite(abs_test.p_value) if abs_test else None,
    )


@dataclass(frozen=True)
class Trend:
    """The WLS line of per-day lifts on the day index, and the one-sided test for fading."""

    days: int  # K: days with a usable lift
    slope: float  # change of the relative lift per day
    intercept: float  # the line's value at day 0
    se: float  # se(slope), with the dispersion phi
    z: float  # slope / se
    dispersion: float  # phi: the weighted residual variance (the se uses max(1, phi))
    weighted_mean: float  # y_w: its sign says which slope is "toward zero"
    p_value: float  # one-sided, H1: the slope is toward zero


def novelty_trend(
    days: Sequence[float], lifts: Sequence[float], variances: Sequence[float]
) -> Trend | None:
    """The trend of ``lifts`` (one per day index in ``days``, with their sampling variances)
    and its one-sided p-value for fading (module docstring). None with fewer than MIN_DAYS
    usable days (finite lift, positive finite variance) or a single distinct day."""
    x, y, v = (np.asarray(a, dtype=float) for a in (days, lifts, variances))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(v) & (v > 0)
    x, y, v = x[keep], y[keep], v[keep]
    k = len(x)
    if k < MIN_DAYS:
        return None
    w = 1.0 / v
    x_w, y_w = float(np.sum(w * x) / np.sum(w)), float(np.sum(w * y) / np.sum(w))
    s_xx = float(np.sum(w * (x - x_w) ** 2))
    if not s_xx > 0:
        return None
    slope = float(np.sum(w * (x - x_w) * (y - y_w)) / s_xx)
    intercept = y_w - slope * x_w
    residual = y - intercept - slope * x
    dispersion = float(np.sum(w * residual**2)) / (k - 2)
    se = math.sqrt(max(1.0, dispersion) / s_xx)
    z = slope / se
    toward_zero = -z if y_w >= 0 else z  # large when the slope points toward zero
    p = float(special.ndtr(-toward_zero))  # P(Z >= toward_zero)
    return Trend(k, slope, intercept, se, z, dispersion, y_w, p)


@dataclass(frozen=True)
class NoveltyFlag:
    adjusted_p_value: float | None  # Holm over the family; None: no test
    fading: bool


def novelty_flags(p_values: Sequence[float | None], alpha: float) -> list[NoveltyFlag]:
    """Holm-adjusted one-sided p-values over the family (metrics x treatment arms; None: not
    tested, not in the family) and the flag "effect fading" where the adjusted value < alpha:
    the chance of any false flag when every effect is constant is at most alpha."""
    adjusted = holm(p_values)
    return [NoveltyFlag(a, a is not None and a < alpha) for a in adjusted]
