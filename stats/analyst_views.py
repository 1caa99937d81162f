"""The analyst views, which decide nothing: fixed-horizon, confidence-sequence and Bayesian.

The fixed-horizon and confidence-sequence intervals are two-sided at alpha and relative by the
delta method, for parity with gbstats; their p-values are those of the absolute difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sequential
from .analysis_types import AnalysisConfig
from .bayesian import gaussian_posterior
from .estimators import ArmEstimate, Effect, relative_effect
from .fixed import t_test


@dataclass(frozen=True)
class _Interval:
    low: float | None
    high: float | None
    p_value: float | None


def _fixed_view(effect: Effect, config: AnalysisConfig) -> _Interval:
    test = t_test(effect, config.alpha)
    return _Interval(test.low, test.high, test.p_value)


def _cs_view(effect: Effect, n_total: int, config: AnalysisConfig) -> _Interval:
    width = float(sequential.halfwidth(effect.variance, n_total, config.alpha, config.tuning_n))
    cs_p = float(
        sequential.p_value(effect.estimate, effect.variance, n_total, config.alpha, config.tuning_n)
    )
    return _Interval(effect.estimate - width, effect.estimate + width, cs_p)


def _bayesian_view(effect: Effect, config: AnalysisConfig) -> dict[str, float | None]:
    posterior = gaussian_posterior(
        effect, config.alpha, config.prior_mean, config.prior_sd, config.direction
    )
    return dict(
        chance_to_win=posterior.chance_to_win,
        credible_low=posterior.credible_low,
        credible_high=posterior.credible_high,
    )


def analyst_views(
    control: ArmEstimate,
    treatment: ArmEstimate,
    effect: Effect,
    n_total: int,
    config: AnalysisConfig,
) -> dict[str, float | None]:
    """The ``MetricResult`` fields of the views: relative intervals (None when the relative
    effect is unusable), p-values of the absolute difference ``effect``, the Bayesian view."""
    rel_eff = relative_effect(control, treatment)
    relative = rel_eff if rel_eff is not None and rel_eff.usable else None
    rel_fixed = _fixed_view(relative, config) if relative is not None else None
    rel_cs = _cs_view(relative, n_total, config) if relative is not None else None
    fields = dict(
        fixed_ci_low=rel_fixed.low if rel_fixed else None,
        fixed_ci_high=rel_fixed.high if rel_fixed else None,
        fixed_p_value=_fixed_view(effect, config).p_value,
        cs_ci_low=rel_cs.low if rel_cs else None,
        cs_ci_high=rel_cs.high if rel_cs else None,
        cs_p_value=_cs_view(effect, n_total, config).p_value,
    )
    if relative is not None:
        fields.update(_bayesian_view(relative, config))
    return fields
