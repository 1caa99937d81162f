"""Does an effect differ between subgroups? Cochran's Q across independent subgroup estimates.

Used by dimension breakdowns: the same comparison (one metric, one treatment arm against
control) estimated separately in each level of a unit attribute (country, platform...). Units
belong to one level each, so the per-level estimates are independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .estimators import Effect, SampleStats, arm_estimate, cuped_arms, relative_effect


@dataclass(frozen=True)
class Heterogeneity:
    """Cochran's Q test of "the effect is the same in every level"."""

    q: float | None  # Cochran's Q; None with fewer than two usable levels
    df: int  # levels used - 1
    p_value: float | None  # P(chi2_df >= Q)
    i_squared: float | None  # share of the spread beyond chance, max(0, (Q - df) / Q)
    pooled: float | None  # the inverse-variance weighted mean effect (fixed effect)
    levels: int  # levels with a usable estimate


def cochran_q(estimates: Sequence[float], variances: Sequence[float]) -> Heterogeneity:
    """Cochran (1954), "The combination of estimates from different experiments", Biometrics
    10: with weights w_i = 1 / v_i and the fixed-effect mean m = sum(w_i y_i) / sum(w_i),
    Q = sum(w_i (y_i - m)^2), which under homogeneity (one common effect, variances known)
    follows chi-square with k - 1 degrees of freedom; p = P(chi2_{k-1} >= Q).
    I^2 = max(0, (Q - (k - 1)) / Q) (Higgins & Thompson 2002, Statistics in Medicine 21).
    Estimates whose variance is not a positive finite number are left out.
    Reference: statsmodels.stats.meta_analysis.combine_effects (q, test_homogeneity)."""
    pairs = [
        (float(y), float(v))
        for y, v in zip(estimates, variances, strict=True)
        if math.isfinite(y) and math.isfinite(v) and v > 0
    ]
    k = len(pairs)
    if k < 2:
        return Heterogeneity(None, max(k - 1, 0), None, None, pairs[0][0] if pairs else None, k)
    y = np.array([p[0] for p in pairs])
    w = 1.0 / np.array([p[1] for p in pairs])
    pooled = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - pooled) ** 2))
    df = k - 1
    p_value = float(sps.chi2.sf(q, df))
    i_squared = max(0.0, (q - df) / q) if q > 0 else 0.0
    return Heterogeneity(q, df, p_value, i_squared, pooled, k)


def relative_lift(
    control: SampleStats, treatment: SampleStats, kind: str, cuped: bool = False
) -> Effect | None:
    """The relative lift L = (mean_t - mean_c) / mean_c of one level on the log scale,
    log(1 + L), with variance Var(L) / (1 + L)^2 (the delta method on the log), where L and
    Var(L) are the results' relative lift and its delta-method variance
    (``estimators.relative_effect``), CUPED-adjusted as the results adjust it (the level's own
    pooled theta; never for ratio metrics). Without CUPED this is the log ratio of means with
    Var = v_t / (n_t mu_t^2) + v_c / (n_c mu_c^2), for proportions the log risk ratio of
    meta-analysis (Borenstein et al. 2009, "Introduction to Meta-Analysis", ch. 5). The same
    relative lift in every level is the same log ratio, and the log scale is the one where the
    estimate is close to normal, so Cochran's Q holds its level with small levels and low
    rates (the plain relative scale does not: its variance moves with the estimate).

    None when it is not usable: an arm with fewer than two units, no variance, a control mean
    of 0, or 1 + L <= 0."""
    if min(control.n, treatment.n) < 2:
        return None
    if cuped and kind != "ratio":
        c_arm, t_arm, _ = cuped_arms(control, treatment, kind)
    else:
        c_arm, t_arm = arm_estimate(control, kind), arm_estimate(treatment, kind)
    effect = relative_effect(c_arm, t_arm)
    if effect is None or not effect.usable or effect.estimate <= -1:
        return None
    ratio = 1.0 + effect.estimate
    log_effect = Effect(math.log(ratio), effect.variance / (ratio * ratio), effect.dof)
    return log_effect if log_effect.usable else None
