"""Bayesian view of an effect: chance to beat control and a credible interval (Gaussian model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from .estimators import Effect


@dataclass(frozen=True)
class BayesianResult:
    chance_to_win: float  # posterior P(effect is in the good direction)
    credible_low: float
    credible_high: float
    posterior_mean: float
    posterior_sd: float


def gaussian_posterior(
    effect: Effect,
    alpha: float = 0.05,
    prior_mean: float = 0.0,
    prior_sd: float | None = None,
    direction: str = "increase",
) -> BayesianResult:
    """Normal likelihood N(estimate, Var) on the (relative) effect with a N(m0, s0^2) prior:
    posterior precision 1/Var + 1/s0^2, mean (estimate/Var + m0/s0^2) / precision; a flat
    prior (prior_sd None) leaves N(estimate, Var). Chance to win = P(effect > 0), or
    P(effect < 0) for "decrease" metrics; the credible interval is the central 1 - alpha.
    Gelman et al., "Bayesian Data Analysis" (3rd ed.), section 2.5; gbstats
    EffectBayesianABTest uses the same model.
    """
    if direction not in ("increase", "decrease"):
        raise ValueError(f"unknown direction {direction!r}")
    if prior_sd is not None and prior_sd > 0:
        precision = 1.0 / effect.variance + 1.0 / prior_sd**2
        mean = (effect.estimate / effect.variance + prior_mean / prior_sd**2) / precision
    else:
        precision = 1.0 / effect.variance
        mean = effect.estimate
    sd = math.sqrt(1.0 / precision)
    # scipy.special's ndtr / ndtri are the normal cdf and quantile without the overhead of
    # scipy.stats' distribution objects (the decision simulation calls this thousands of times).
    above = float(special.ndtr(mean / sd))
    z = float(special.ndtri(1 - alpha / 2))
    low, high = mean - z * sd, mean + z * sd
    return BayesianResult(above if direction == "increase" else 1.0 - above, low, high, mean, sd)
