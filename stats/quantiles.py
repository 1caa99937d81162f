"""Quantile metrics for release health: the difference of a quantile (p50, p95, p99 of a value
such as latency_ms) between two independent arms, with a fixed-horizon interval.

Each arm's quantile is the sample quantile by linear interpolation (numpy ``method="linear"``,
PostgreSQL ``percentile_cont``, Hyndman & Fan 1996 definition 7). Its standard error is
Woodruff's (1952, "Confidence intervals for medians and other position measures", JASA 47,
635-646): the binomial interval for the CDF at the quantile, ``q -/+ z_w sqrt(q (1 - q) / n)``,
mapped back through the empirical quantile function, with ``z_w = z_0.975``:

    se = (Q(q + h) - Q(q - h)) / (2 z_w),   h = z_w sqrt(q (1 - q) / n).

This estimates the sparsity ``1 / f(Q(q))`` by a finite difference of the quantile function,
so no density or bandwidth has to be chosen, and it holds up in the tails (Sitter & Wu 2001,
Statistics & Probability Letters 52, 353-358). The arms are independent, so the difference
``d = Q_t(q) - Q_c(q)`` has ``se_d = sqrt(se_t^2 + se_c^2)`` and the interval is
``d -/+ z_{1 - alpha/2} se_d``: the construction Price & Bonett (2002, "Distribution-free
confidence intervals for difference and ratio of medians", J. Statist. Comput. Simul. 72,
119-124) use for the difference of medians, there with an order-statistic SE at the median.

Event-level values (several requests per unit) are clustered: with a unit id per value the
band's half-width uses the clustered (ratio-estimator) variance of the CDF at the quantile
instead of q (1 - q) / n, as Francisco & Fuller (1991, "Quantile estimation with a complex
survey design", Ann. Statist. 19, 454-469) do for cluster samples.

The same SE comes from a fixed-bin histogram per arm (counts SQL can sum cheaply): the
quantile function is then the ogive, linear within each bin (``*_from_histograms``).
Pure numpy/scipy. See docs/statistics.md, "Quantile metrics (for release health)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

WOODRUFF_Z = float(special.ndtri(0.975))
MIN_UNITS = 20
MIN_TAIL = 10
METHOD = "woodruff"
METHOD_HISTOGRAM = "woodruff-histogram"
DIRECTIONS = ("increase_is_bad", "decrease_is_bad")


@dataclass(frozen=True)
class ArmQuantile:
    """One arm's q quantile and its Woodruff standard error."""

    n: int
    estimate: float
    se: float


@dataclass(frozen=True)
class QuantileHarmBound:
    """The one-sided bound at level alpha on the side that can show harm: the lower bound when
    an increase is bad (harmed when it is above 0), the upper bound when a decrease is bad."""

    q: float
    alpha: float
    direction: str
    difference: float
    standard_error: float
    bound: float
    harmed: bool
    method: str


@dataclass(frozen=True)
class QuantileDifference:
    """Treatment minus control at the q quantile, with a two-sided (1 - alpha) interval."""

    q: float
    alpha: float
    treatment_quantile: float
    control_quantile: float
    difference: float
    relative_difference: float | None  # difference / |control quantile|; None when that is 0
    standard_error: float
    lower: float
    upper: float
    treatment_se: float
    control_se: float
    n_treatment: int
    n_control: int
    method: str

    def harm_bound(self, alpha: float, direction: str = "increase_is_bad") -> QuantileHarmBound:
        """The one-sided harm bound at level alpha from the same standard error."""
        _check_alpha(alpha)
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
        width = float(special.ndtri(1.0 - alpha)) * self.standard_error
        if direction == "increase_is_bad":
            bound, harmed = self.difference - width, self.difference - width > 0
        else:
            bound, harmed = self.difference + width, self.difference + width < 0
        return QuantileHarmBound(
            self.q, alpha, direction, self.difference, self.standard_error, bound, harmed,
            self.method,
        )  # fmt: skip


def _check_q(q: float) -> None:
    if not (isinstance(q, int | float) and math.isfinite(q) and 0 < q < 1):
        raise ValueError(f"q must be a probability strictly between 0 and 1, got {q!r}")


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _check_count(n: float, q: float, arm: str) -> None:
    """Refuse a sample whose Woodruff band q -/+ h would reach past its data: at least
    MIN_UNITS values and MIN_TAIL expected on each side of the quantile (n q and n (1 - q));
    then h < 0.62 min(q, 1 - q), so the band stays inside (0, 1)."""
    if n < MIN_UNITS or n * min(q, 1.0 - q) < MIN_TAIL:
        need = max(MIN_UNITS, math.ceil(MIN_TAIL / min(q, 1.0 - q) - 1e-9))
        raise ValueError(
            f"too few values in {arm} for the q={q:g} quantile: {n:g}, need at least {need} "
            f"({MIN_TAIL} expected beyond the quantile on each side and {MIN_UNITS} in all) "
            "for its standard error to be estimable from the data"
        )


def woodruff_halfwidth(q: float, n: float) -> float:
    """h = z_w sqrt(q (1 - q) / n): the half-width of the binomial band on the CDF scale."""
    return WOODRUFF_Z * math.sqrt(q * (1.0 - q) / n)


def _woodruff_se(low: float, high: float, arm: str, q: float) -> float:
    se = (high - low) / (2.0 * WOODRUFF_Z)
    if not se > 0:
        raise ValueError(
            f"all values of {arm} around its q={q:g} quantile are tied ({low:g}): the "
            "quantile is discrete there and its standard error cannot be estimated"
        )
    return se


def _clustered_cdf_variance(x: np.ndarray, units: ArrayLike, at: float, arm: str) -> float:
    """Var of the empirical CDF at ``at`` when the values are events clustered in units: the
    ratio estimator F = sum a_i / sum m_i (a_i of unit i's m_i events at or below ``at``) by the
    delta method, K / (K - 1) sum (a_i - F m_i)^2 / (sum m_i)^2 (Woodruff's band with the
    design's variance, as Francisco & Fuller 1991 do for clustered survey samples)."""
    u = np.asarray(units).ravel()
    if u.size != x.size:
        raise ValueError(f"{arm} has {u.size} unit ids for {x.size} values")
    inverse = np.unique(u, return_inverse=True)[1].ravel()
    k = int(inverse.max()) + 1
    if k < MIN_UNITS:
        raise ValueError(f"too few units in {arm}: {k}, need at least {MIN_UNITS}")
    m = np.bincount(inverse, minlength=k).astype(float)
    a = np.bincount(inverse, weights=(x <= at).astype(float), minlength=k)
    f = a.sum() / m.sum()
    return k / (k - 1) * float(np.sum((a - f * m) ** 2)) / m.sum() ** 2


def arm_quantile(
    values: ArrayLike, q: float, arm: str = "the arm", units: ArrayLike | None = None
) -> ArmQuantile:
    """The q quantile of ``values`` (numpy method="linear") and its Woodruff SE. ``units``
    (one id per value) marks event-level values clustered in units: the band's half-width
    then uses the clustered variance of the CDF instead of q (1 - q) / n."""
    _check_q(q)
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{arm} holds non-finite values")
    _check_count(x.size, q, arm)
    estimate = float(np.quantile(x, q, method="linear"))
    if units is None:
        h = woodruff_halfwidth(q, x.size)
    else:
        h = WOODRUFF_Z * math.sqrt(_clustered_cdf_variance(x, units, estimate, arm))
        if not h < min(q, 1.0 - q):
            raise ValueError(
                f"too few units in {arm} for the q={q:g} quantile: its band q -/+ {h:.3g} "
                "reaches past the data"
            )
    low, high = np.quantile(x, [q - h, q + h], method="linear")
    return ArmQuantile(int(x.size), estimate, _woodruff_se(low, high, arm, q))


def _check_histogram(edges: ArrayLike, counts: ArrayLike, arm: str) -> tuple[np.ndarray, ...]:
    e = np.asarray(edges, dtype=float).ravel()
    c = np.asarray(counts, dtype=float).ravel()
    if e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise ValueError("edges must be at least 2 finite, strictly increasing values")
    if c.size != e.size - 1:
        raise ValueError(f"{arm} has {c.size} counts for {e.size - 1} bins")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{arm} counts must be finite and non-negative")
    return e, c


def ogive_quantile(edges: ArrayLike, counts: ArrayLike, p: ArrayLike) -> np.ndarray:
    """The grouped-data quantile: the value where the cumulative count, linear within each bin,
    reaches p n (``L + (p n - C) / f * w`` for the bin [L, L + w) holding it, C the count below
    L, f its count). Bins are [e_j, e_{j+1}), the last one closed, as numpy.histogram's."""
    e, c = np.asarray(edges, dtype=float), np.asarray(counts, dtype=float)
    cum = np.concatenate([[0.0], np.cumsum(c)])
    target = np.asarray(p, dtype=float) * cum[-1]
    j = np.clip(np.searchsorted(cum, target, side="left") - 1, 0, c.size - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(c[j] > 0, (target - cum[j]) / c[j], 0.0)
    return e[j] + np.clip(frac, 0.0, 1.0) * (e[j + 1] - e[j])


def histogram_quantile_bracket(
    edges: ArrayLike, counts: ArrayLike, q: float
) -> tuple[float, float]:
    """Edges [low, high] of the bins holding both the histogram (ogive) q quantile and the
    unit-level one (numpy "linear", between the order statistics of 1-based ranks
    floor((n - 1) q) + 1 and + 2), whatever the values inside the bins: the approximation
    error of the histogram quantile is at most high - low, one bin's width unless the quantile
    sits on a bin edge."""
    _check_q(q)
    e, c = _check_histogram(edges, counts, "the histogram")
    cum = np.concatenate([[0.0], np.cumsum(c)])
    n = cum[-1]
    r1 = math.floor((n - 1) * q) + 1
    ranks = np.array([r1, min(r1 + 1, n), q * n])
    j = np.clip(np.searchsorted(cum, ranks, side="left") - 1, 0, c.size - 1)
    return float(e[j.min()]), float(e[j.max() + 1])


def arm_quantile_from_histogram(
    edges: ArrayLike, counts: ArrayLike, q: float, arm: str = "the arm"
) -> ArmQuantile:
    """The ogive q quantile of one arm's histogram and its Woodruff SE (the same band, mapped
    through the ogive instead of the order statistics)."""
    _check_q(q)
    e, c = _check_histogram(edges, counts, arm)
    n = float(c.sum())
    _check_count(n, q, arm)
    h = woodruff_halfwidth(q, n)
    low, estimate, high = ogive_quantile(e, c, [q - h, q, q + h])
    return ArmQuantile(int(round(n)), float(estimate), _woodruff_se(low, high, arm, q))


def combine(
    treatment: ArmQuantile, control: ArmQuantile, q: float, alpha: float, method: str = METHOD
) -> QuantileDifference:
    """Difference of independent arms' quantiles, se = sqrt(se_t^2 + se_c^2), and the two-sided
    interval d -/+ z_{1 - alpha/2} se."""
    _check_alpha(alpha)
    d = treatment.estimate - control.estimate
    se = math.hypot(treatment.se, control.se)
    width = float(special.ndtri(1.0 - alpha / 2.0)) * se
    relative = d / abs(control.estimate) if control.estimate != 0 else None
    return QuantileDifference(
        q, alpha, treatment.estimate, control.estimate, d, relative, se, d - width, d + width,
        treatment.se, control.se, treatment.n, control.n, method,
    )  # fmt: skip


def quantile_difference(
    treatment_values: ArrayLike,
    control_values: ArrayLike,
    q: float,
    *,
    alpha: float = 0.05,
    treatment_units: ArrayLike | None = None,
    control_units: ArrayLike | None = None,
) -> QuantileDifference:
    """Treatment minus control q quantile, with the Woodruff interval. Values are one per unit,
    or events with ``*_units`` (a unit id per event) so that the SE accounts for events of the
    same unit being alike.

    Raises ValueError for q outside (0, 1), alpha outside (0, 1), non-finite values, an arm
    with too few values for q (fewer than 20, or n min(q, 1 - q) < 10), or an arm whose values
    around the quantile are all tied (a discrete quantile has no estimable SE)."""
    _check_alpha(alpha)
    treatment = arm_quantile(treatment_values, q, "treatment", treatment_units)
    control = arm_quantile(control_values, q, "control", control_units)
    return combine(treatment, control, q, alpha)


def quantile_harm_bound(
    treatment_values: ArrayLike,
    control_values: ArrayLike,
    q: float,
    *,
    alpha: float,
    direction: str = "increase_is_bad",
    treatment_units: ArrayLike | None = None,
    control_units: ArrayLike | None = None,
) -> QuantileHarmBound:
    """The one-sided harm bound at level alpha: for "increase_is_bad" (latency) the lower
    bound d - z_{1 - alpha} se, harm when it is above 0; for "decrease_is_bad" the upper bound
    d + z_{1 - alpha} se, harm when it is below 0."""
    result = quantile_difference(
        treatment_values, control_values, q,
        treatment_units=treatment_units, control_units=control_units,
    )  # fmt: skip
    return result.harm_bound(alpha, direction)


def quantile_difference_from_histograms(
    edges: ArrayLike,
    treatment_counts: ArrayLike,
    control_counts: ArrayLike,
    q: float,
    *,
    alpha: float = 0.05,
) -> QuantileDifference:
    """As ``quantile_difference``, from per-arm counts over shared bins ``edges`` (e.g.
    log-spaced). Each arm's quantile and band ends are within their bins' widths of the
    unit-level ones (``histogram_quantile_bracket``); every value must fall inside the edges."""
    _check_alpha(alpha)
    treatment = arm_quantile_from_histogram(edges, treatment_counts, q, "treatment")
    control = arm_quantile_from_histogram(edges, control_counts, q, "control")
    return combine(treatment, control, q, alpha, METHOD_HISTOGRAM)
