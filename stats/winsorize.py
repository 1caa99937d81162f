"""Winsorization of per-unit values: cap outliers at a quantile before summing."""

from __future__ import annotations

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


def winsorize(values: Sequence[float] | np.ndarray, quantile: float) -> np.ndarray:
    """Per-unit values with everything above ``winsor_cap(values, quantile)`` replaced by the
    cap (upper tail only: A/B metrics such as revenue have long right tails; the lower end is
    bounded by 0). quantile = 1 leaves the values unchanged."""
    x = np.asarray(values, dtype=float)
    cap = winsor_cap(x, quantile)
    if cap is None:
        return x.copy()
    return np.minimum(x, cap)
