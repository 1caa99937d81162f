"""Monte Carlo: error control under continuous peeking and the power cost of each design.

A/A experiments checked after each of 100 equally spaced looks (10,000 units per arm planned,
baseline rate 10%): the share that ever declares a difference must stay within 5% plus Monte
Carlo error for both sequential rules, while the naive fixed-horizon test exceeds 20%.
Power at the fixed design's 80%-power MDE: the group-sequential design keeps >= 90% of it.
"""

import math

import numpy as np
import pytest

from analysis.stats import AnalysisConfig, SampleStats, analyze_metric
from analysis.stats.simulation import SimulationConfig, format_report, relative_lift_arrays, run

EXPERIMENTS = 4000


@pytest.fixture(scope="module")
def report():
    calls = []
    config = SimulationConfig(n_experiments=EXPERIMENTS, looks=100, seed=20231105)
    result = run(
        config, progress=lambda scenario, done, total: calls.append((scenario, done, total))
    )
    assert calls[-1] == ("power", EXPERIMENTS, EXPERIMENTS)
    return result


def allowance(share: float = 0.05) -> float:
    """Three Monte Carlo standard errors of a 5% rate at this number of experiments."""
    return 3 * math.sqrt(share * (1 - share) / EXPERIMENTS)


def test_sequential_rules_control_false_positives_under_peeking(report):
    assert report.false_positive["sequential"] <= 0.05 + allowance()
    assert report.false_positive["group_sequential"] <= 0.05 + allowance()
    assert report.false_positive["fixed"] <= 0.05 + allowance()


def test_naive_peeking_inflates_false_positives(report):
    assert report.false_positive["naive"] > 0.20


def test_group_sequential_keeps_most_of_the_fixed_horizon_power(report):
    assert report.power["fixed"] > 0.75
    assert report.power["group_sequential"] >= 0.9 * report.power["fixed"]
    # the confidence sequence pays for validity at every sample size with power
    assert 0.2 < report.power["sequential"] < report.power["group_sequential"]
    assert "group_sequential" in format_report(report)


def test_vectorised_lift_matches_analyze_metric():
    """The simulation's array formulas are those of analyze_metric (binomial, relative)."""
    conv_c, conv_t, n = (
        np.array([[95.0, 410.0]]),
        np.array([[120.0, 380.0]]),
        np.array([1000.0, 4000.0]),
    )
    lift, var, _, ok = relative_lift_arrays(conv_c, conv_t, n)
    for k in range(2):
        result = analyze_metric(
            SampleStats(int(n[k]), conv_c[0, k], conv_c[0, k]),
            SampleStats(int(n[k]), conv_t[0, k], conv_t[0, k]),
            AnalysisConfig(kind="binomial", method="fixed"),
        )
        assert ok[0, k] and lift[0, k] == pytest.approx(result.lift_rel, rel=1e-12)
        z = lift[0, k] / math.sqrt(var[0, k])
        half = (result.cs_ci_high - result.cs_ci_low) / 2
        assert (abs(lift[0, k]) > half) == (result.cs_p_value < 0.05)
        assert z == pytest.approx(
            result.lift_rel / ((result.fixed_ci_high - result.lift_rel) / 1.96), rel=1e-3
        )
