"""Winsorization of per-unit values: cap outliers at a quantile before summing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def winsor_cap(values: Sequence[float] | np.ndarray, quantile: float) -> float | None:
    """The cap: the ``quantile`` of the per-unit values by linear interpolation between order
    statistics, h = (n - 1) q, cap = x_(floor h) + (h - floor h)(x_(floor h + 1) - x_(floor h))
    (0-based sorted x). This is PostgreSQL's ``percentile_cont(q) WITHIN GROUP (ORDER BY v)``,
    numpy's default ``method="linear"`` and Hyndman & Fan (1996) definition 7.
    None for no values."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    return float(np.quantile(x, quantile, method="linear"))


def order_statistics_needed(n: int, quantile: float) -> int:
    """How many of the highest of ``n`` values ``winsor_cap`` reads: the order statistics from
    x_(floor h) up, h = (n - 1) q, so n - floor((n - 1) q) of them (0 for no values)."""
    if n <= 0:
        return 0
    return n - math.floor((n - 1) * quantile)


def winsor_cap_from_highest(highest: Sequence[float], n: int, quantile: float) -> float | None:
    """``winsor_cap`` of ``n`` values from only their ``order_statistics_needed(n, quantile)``
    highest, in descending order (a cap at q = 0.99 needs the top 1%): the same rule,
    x_(floor h) + (h - floor h)(x_(floor h + 1) - x_(floor h)) at h = (n - 1) q, where x_(floor h)
    is the last of them and x_(floor h + 1) the one before; x_(floor h) alone when h is whole,
    as PostgreSQL's ``percentile_cont`` (Hyndman & Fan 1996, definition 7). None for no
    values."""
    if n <= 0:
        return None
    h = quantile * (n - 1)
    lo = highest[len(highest) - 1]
    if math.ceil(h) == math.floor(h):
        return lo
    hi = highest[len(highest) - 2]
    return lo + (h - math.floor(h)) * (hi - lo)


def winsorize(values: Sequence[float] | np.ndarray, quantile: float) -> np.ndarray:
    """Per-unit values with everything above ``winsor_cap(values, quantile)`` replaced by the
    cap (upper tail only: A/B metrics such as revenue have long right tails; the lower end is
    bounded by 0). quantile = 1 leaves the values unchanged."""
    x = np.asarray(values, dtype=float)
    cap = winsor_cap(x, quantile)
    if cap is None:
        return x.copy()
    return np.minimum(x, cap)
