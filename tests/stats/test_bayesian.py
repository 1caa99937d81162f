"""Bayesian view against gbstats EffectBayesianABTest (Gaussian model on the relative lift)."""

import pytest
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.models.statistics import ProportionStatistic

from stats import AnalysisConfig, SampleStats, analyze_metric

CONTROL, TREATMENT = SampleStats(5000, 500, 500), SampleStats(5100, 561, 561)


def gb_result(prior: GaussianPrior, inverse: bool = False):
    return EffectBayesianABTest(
        ProportionStatistic(n=5000, sum=500),
        ProportionStatistic(n=5100, sum=561),
        EffectBayesianConfig(prior_effect=prior, inverse=inverse),
    ).compute_result()


def test_flat_prior_matches_gbstats():
    """Reference: EffectBayesianABTest, improper (flat) prior, relative, 500/5000 vs 561/5100."""
    ref = gb_result(GaussianPrior(mean=0, variance=1, proper=False))
    result = analyze_metric(CONTROL, TREATMENT, AnalysisConfig(kind="binomial"))
    assert result.chance_to_win == pytest.approx(ref.chance_to_win, abs=1e-7)
    assert (result.credible_low, result.credible_high) == pytest.approx(tuple(ref.ci), abs=1e-7)


def test_proper_prior_matches_gbstats():
    """Reference: EffectBayesianABTest with a proper N(0.02, 0.05^2) prior on the lift."""
    ref = gb_result(GaussianPrior(mean=0.02, variance=0.05**2, proper=True))
    config = AnalysisConfig(kind="binomial", prior_mean=0.02, prior_sd=0.05)
    result = analyze_metric(CONTROL, TREATMENT, config)
    assert result.chance_to_win == pytest.approx(ref.chance_to_win, abs=1e-7)
    assert (result.credible_low, result.credible_high) == pytest.approx(tuple(ref.ci), abs=1e-7)


def test_decrease_metric_wins_when_it_falls():
    """Reference: EffectBayesianABTest with inverse=True (a metric where lower is better)."""
    ref = gb_result(GaussianPrior(proper=False), inverse=True)
    config = AnalysisConfig(kind="binomial", direction="decrease")
    result = analyze_metric(CONTROL, TREATMENT, config)
    assert result.chance_to_win == pytest.approx(ref.chance_to_win, abs=1e-7)
    assert result.chance_to_win < 0.5
