"""The release simulation (releases/simulation.py) in short form, with fixed seeds: harmless
releases are falsely rolled back at most at the release's alpha over all steps and looks, and
harmful ones are rolled back. The full table is in docs/statistics.md "Guarded releases"
(python -m releases.simulation --runs 1000)."""

from dataclasses import replace

import pytest

from releases.simulation import SCENARIOS, simulate


def test_harmless_releases_are_rarely_rolled_back_fast():
    """Errors and conversion only (the fast suite); 150 A/A releases, 5 steps, a look a minute
    (about 60 looks each). A policy at twice its alpha fails this about 90% of the time."""
    summary = simulate(replace(SCENARIOS["aa"], quantiles=False), runs=150, seed=11)
    assert summary.rollback_rate <= 0.06
    assert summary.completed_rate >= 0.9


def test_doubled_errors_are_rolled_back_fast():
    summary = simulate(replace(SCENARIOS["errors+100%"], quantiles=False), runs=60, seed=12)
    assert summary.rollback_rate >= 0.95
    assert summary.median_minutes_to_rollback < 40


@pytest.mark.slow
@pytest.mark.parametrize("key", ["aa", "aa-long", "aa-low"])
def test_harmless_releases_hold_alpha(key):
    """With latency p95 (event-level, clustered) except for the long watch (300 looks), where
    errors and conversion carry the peeking (test_quantile_sequence.py watches quantiles)."""
    runs = {"aa": 400, "aa-long": 200, "aa-low": 200}[key]
    scenario = SCENARIOS[key]
    if key == "aa-long":
        scenario = replace(scenario, quantiles=False)
    summary = simulate(scenario, runs=runs, seed=21)
    # alpha plus two binomial standard errors of the estimate at the run count
    assert summary.rollback_rate <= 0.05 + 2 * (0.05 * 0.95 / runs) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("key", ["errors+30%", "latency+25%"])
def test_harmful_releases_are_rolled_back(key):
    summary = simulate(SCENARIOS[key], runs=100, seed=22)
    assert summary.rollback_rate >= 0.9
