"""Monte Carlo: error control under continuous peeking and the power cost of each design.

A/A experiments checked after each of 100 equally spaced looks (10,000 units per arm planned,
baseline rate 10%): the share that ever declares a difference must stay within 5% plus Monte
Carlo error for both sequential rules, while the naive fixed-horizon test exceeds 20%.
Power at the fixed design's 80%-power MDE: the group-sequential design keeps >= 90% of it.
"""

import math

import numpy as np
import pytest

from stats import AnalysisConfig, SampleStats, analyze_metric
from stats.simulation import SimulationConfig, format_report, relative_lift_arrays, run

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


def allowance(share: float) -> float:
    """Four Monte Carlo standard errors of a rate ``share`` at this number of experiments: the
    documented figures (docs/statistics.md, 10,000 experiments) are themselves estimates."""
    return 4 * math.sqrt(share * (1 - share) / EXPERIMENTS)


# docs/statistics.md "Peeking simulation": python -m stats.simulation, 10,000 runs.
DOCUMENTED_FALSE_POSITIVE = {"sequential": 0.019, "group_sequential": 0.049, "fixed": 0.048}
DOCUMENTED_POWER = {"fixed": 0.830, "group_sequential": 0.798, "sequential": 0.488}


@pytest.mark.parametrize("rule", sorted(DOCUMENTED_FALSE_POSITIVE))
def test_sequential_rules_control_false_positives_under_peeking(report, rule):
    """Both bounds: a rule that became conservative (lost power) fails as well as one that
    became liberal."""
    documented = DOCUMENTED_FALSE_POSITIVE[rule]
    assert report.false_positive[rule] <= 0.05 + allowance(0.05)
    assert abs(report.false_positive[rule] - documented) <= allowance(documented)


def test_naive_peeking_inflates_false_positives(report):
    assert report.false_positive["naive"] > 0.30


@pytest.mark.parametrize("rule", sorted(DOCUMENTED_POWER))
def test_power_matches_the_documented_figure(report, rule):
    documented = DOCUMENTED_POWER[rule]
    assert abs(report.power[rule] - documented) <= allowance(documented)
    assert report.power["group_sequential"] >= 0.9 * report.power["fixed"]
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
