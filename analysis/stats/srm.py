"""Sample ratio mismatch: is the observed split of units consistent with the configured weights?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

SRM_P_THRESHOLD = 0.001


@dataclass(frozen=True)
class SrmResult:
    p_value: float | None  # None when there is nothing to test (fewer than two weighted arms)
    chi2: float | None
    flagged: bool  # True means: do not trust this experiment's results
    message: str | None


def srm_test(
    observed: Sequence[int],
    weights: Sequence[float],
    min_count: int = 20,
    threshold: float = SRM_P_THRESHOLD,
) -> SrmResult:
    """Pearson chi-square goodness of fit of unit counts to the configured weights.

    chi2 = sum_i (o_i - e_i)^2 / e_i, e_i = N w_i / sum(w), on k - 1 degrees of freedom
    (k arms with positive weight); flagged when p < ``threshold`` (0.001) and every
    positive-weight arm has at least ``min_count`` units (before that the chi-square
    approximation is poor and an early flag would mostly be noise). Fabijan et al. (2019),
    "Diagnosing sample ratio mismatch in online controlled experiments", KDD, section 4.

    Zero-weight arms are left out of the chi-square; any unit in one is a mismatch by
    definition (no unit can be assigned there), so it is flagged at once with p = 0.
    """
    if len(observed) != len(weights):
        raise ValueError("observed and weights must have the same length")
    if any(o < 0 for o in observed) or any(w < 0 for w in weights):
        raise ValueError("counts and weights must be non-negative")
    stray = [i for i, (o, w) in enumerate(zip(observed, weights, strict=True)) if w == 0 and o > 0]
    if stray:
        units = sum(observed[i] for i in stray)
        return SrmResult(
            0.0,
            None,
            True,
            f"{units} units in zero-weight arm(s) at position(s) {stray}: sample ratio mismatch",
        )
    pairs = [(o, w) for o, w in zip(observed, weights, strict=True) if w > 0]
    total = sum(o for o, _ in pairs)
    if len(pairs) < 2:
        return SrmResult(None, None, False, "fewer than two arms with positive weight: no SRM test")
    if total == 0:
        return SrmResult(1.0, 0.0, False, "no units yet")
    weight_sum = sum(w for _, w in pairs)
    chi2 = 0.0
    for o, w in pairs:
        expected = total * w / weight_sum
        chi2 += (o - expected) ** 2 / expected
    p = float(stats.chi2.sf(chi2, len(pairs) - 1))
    if not math.isfinite(p):
        p = 0.0
    enough = all(o >= min_count for o, _ in pairs)
    if not enough:
        return SrmResult(
            p, chi2, False, f"fewer than {min_count} units in an arm: SRM not judged yet"
        )
    if p < threshold:
        return SrmResult(p, chi2, True, f"sample ratio mismatch: p = {p:.2g} < {threshold}")
    return SrmResult(p, chi2, False, None)
