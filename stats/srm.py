"""Sample ratio mismatch: is the observed split of units consistent with the configured weights?

The decision is an always-valid (anytime-valid) test, because the pipeline checks the split at
every snapshot: Lindon & Malek (2022), "Anytime-Valid Inference for Multinomial Count Data",
NeurIPS 2022 (arXiv:2011.03567), the Dirichlet-multinomial mixture test of a multinomial null.
With null shares p_i (weights normalised over the arms with positive weight), counts x_i and
a Dirichlet(a) prior on the shares under the alternative,

    BF_n = [B(a + x) / B(a)] / prod_i p_i^{x_i},    B(v) = prod_i Gamma(v_i) / Gamma(sum_i v_i),

is a nonnegative martingale with mean 1 under H0 (the Bayes factor of a Dirichlet-multinomial
against the null multinomial, the multinomial coefficient cancelling), so by Ville's inequality
P(BF_n >= 1 / threshold for some n | H0) <= threshold: the p-value min(1, 1 / BF_n) may be
checked after every unit and the flag ``p < threshold`` still fires with probability at most
``threshold`` over the whole experiment if the split is right.

The prior is a_i = k p_i with k = ``SRM_PRIOR_STRENGTH`` = 100: centred on the configured
split, with a prior sd of each share of sqrt(p_i (1 - p_i) / (k + 1)), about 5 percentage
points at 50/50. That is the scale of the mismatches broken assignment or logging produces
(a few points and up); a larger k tunes the test to smaller mismatches but makes it slower on
large ones, a smaller k the reverse. The Bayes factor is computed in log space with gammaln,
so counts in the millions do not overflow.

The classic fixed-horizon Pearson chi-square (Fabijan et al. 2019, "Diagnosing sample ratio
mismatch in online controlled experiments", KDD) is kept for display as ``chi2`` and
``chi2_p_value``; it is not valid under repeated looks (checked at every snapshot, its
false-alarm rate grows with the number of looks) and does not drive ``flagged``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

SRM_P_THRESHOLD = 0.001
SRM_PRIOR_STRENGTH = 100.0  # k: the Dirichlet prior is a = k x (normalised weights)


@dataclass(frozen=True)
class SrmResult:
    p_value: float | None  # always-valid p-value; None when there is nothing to test
    chi2: float | None  # Pearson chi-square statistic (for display)
    flagged: bool  # True means: do not trust this experiment's results
    message: str | None
    chi2_p_value: float | None = None  # fixed-horizon chi-square p-value (not valid when peeking)


def log_bayes_factor(
    observed: Sequence[int], shares: Sequence[float], strength: float = SRM_PRIOR_STRENGTH
) -> float:
    """log BF_n of the Dirichlet-multinomial mixture (prior a = strength x shares) against the
    multinomial with the given shares (positive, summing to 1)."""
    x = np.asarray(observed, dtype=float)
    p = np.asarray(shares, dtype=float)
    a = strength * p
    log_beta_posterior = special.gammaln(a + x).sum() - special.gammaln((a + x).sum())
    log_beta_prior = special.gammaln(a).sum() - special.gammaln(a.sum())
    return float(log_beta_posterior - log_beta_prior - (x * np.log(p)).sum())


def srm_test(
    observed: Sequence[int],
    weights: Sequence[float],
    threshold: float = SRM_P_THRESHOLD,
) -> SrmResult:
    """Always-valid sample ratio mismatch test of unit counts against the configured weights.

    Flagged when the always-valid p-value min(1, 1 / BF_n) is below ``threshold`` (0.001),
    at any number of units: no minimum count is needed, since the error guarantee holds at
    every look. ``chi2`` and ``chi2_p_value`` are the classic Pearson chi-square on k - 1
    degrees of freedom, for comparison only.

    Zero-weight arms are left out of the test; any unit in one is a mismatch by definition (no
    unit can be assigned there), so it is flagged at once with p = 0.
    """
    if len(observed) != len(weights):
        raise ValueError("observed and weights must have the same length")
    if any(o < 0 for o in observed) or any(w < 0 for w in weights):
        raise ValueError("counts and weights must be non-negative")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError("weights must be finite")
    stray = [i for i, (o, w) in enumerate(zip(observed, weights, strict=True)) if w == 0 and o > 0]
    if stray:
        units = sum(observed[i] for i in stray)
        return SrmResult(
            0.0,
            None,
            True,
            f"{units} units in zero-weight arm(s) at position(s) {stray}: sample ratio mismatch",
            0.0,
        )
    pairs = [(o, w) for o, w in zip(observed, weights, strict=True) if w > 0]
    total = sum(o for o, _ in pairs)
    if len(pairs) < 2:
        return SrmResult(None, None, False, "fewer than two arms with positive weight: no SRM test")
    if total == 0:
        return SrmResult(1.0, 0.0, False, "no units yet", 1.0)
    weight_sum = sum(w for _, w in pairs)
    shares = [w / weight_sum for _, w in pairs]
    counts = [o for o, _ in pairs]
    chi2 = 0.0
    for o, share in zip(counts, shares, strict=True):
        expected = total * share
        chi2 += (o - expected) ** 2 / expected
    chi2_p = float(stats.chi2.sf(chi2, len(pairs) - 1))
    log_bf = log_bayes_factor(counts, shares)
    p = float(min(1.0, math.exp(-log_bf))) if log_bf > -700 else 1.0
    if p < threshold:
        return SrmResult(
            p,
            chi2,
            True,
            f"sample ratio mismatch: always-valid p = {p:.2g} < {threshold}",
            chi2_p,
        )
    return SrmResult(p, chi2, False, None, chi2_p)
