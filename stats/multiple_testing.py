"""Multiple-testing corrections: Bonferroni alpha, Holm and Benjamini-Hochberg adjusted p-values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CORRECTIONS = ("bonferroni", "holm", "benjamini_hochberg")


def bonferroni_alpha(alpha: float, n_metrics: int, n_arms: int = 1) -> float:
    """alpha / (number of primary metrics x number of treatment arms) (Bonferroni 1936);
    each primary comparison is then tested, and its CI built, at this level."""
    return alpha / max(n_metrics, 1) / max(n_arms, 1)


def _clean(pvalues: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    index = np.array([i for i, p in enumerate(pvalues) if p is not None], dtype=int)
    values = np.array([min(max(float(pvalues[i]), 0.0), 1.0) for i in index], dtype=float)
    return index, values


def _place(pvalues: Sequence[float | None], index: np.ndarray, adjusted: np.ndarray) -> list:
    out: list[float | None] = [None] * len(pvalues)
    for i, p in zip(index, adjusted, strict=True):
        out[int(i)] = float(p)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm (1979) step-down adjusted p-values (family-wise error):
    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) over the sorted p-values.
    None entries are not part of the family and stay None."""
    index, p = _clean(pvalues)
    m = len(p)
    if m == 0:
        return [None] * len(pvalues)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum((m - np.arange(m)) * p[order], 1.0))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return _place(pvalues, index, adjusted)


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini & Hochberg (1995) step-up adjusted p-values (false discovery rate):
    q_(i) = min_{j >= i} min(1, m p_(j) / j) over the sorted p-values.
    None entries are not part of the family and stay None."""
    index, p = _clean(pvalues)
    m = len(p)
    if m == 0:
        return [None] * len(pvalues)
    order = np.argsort(p, kind="stable")
    scaled = m * p[order] / np.arange(1, m + 1)
    stepped = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return _place(pvalues, index, adjusted)


def ci_alpha(method: str, alpha: float, n_tests: int, n_rejected: int = 0) -> float:
    """The level at which to rebuild each CI so that the intervals match the correction.

    bonferroni / holm: alpha / m, simultaneous coverage (Holm's step-down has no simple
    compatible intervals, so the Bonferroni intervals are the conservative matching ones);
    benjamini_hochberg: alpha R / m for the R selected (rejected) comparisons, the
    false-coverage-rate intervals of Benjamini & Yekutieli (2005), JASA 100, section 2;
    with R = 0, alpha / m. Pass the result as ``AnalysisConfig.alpha``.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; expected one of {CORRECTIONS}")
    m = max(n_tests, 1)
    if method == "benjamini_hochberg":
        return alpha * max(min(n_rejected, m), 1) / m
    return alpha / m
