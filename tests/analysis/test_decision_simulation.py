"""The decision-level simulation (analysis/simulation.py) in short form, with fixed seeds: the
real decision code, looked at every 5 minutes, several guardrails and arms, run to 3x the plan.

Error rates are asserted against their budget plus Monte Carlo error; power and the false-
rollback rate also against the figures documented in docs/statistics.md ("Decision
simulation"), so a policy that became too conservative fails as well as one that leaks.
"""

import math

import pytest

from analysis.simulation import SCENARIOS, simulate

pytestmark = pytest.mark.slow

# docs/statistics.md, "Decision simulation" (python -m analysis.simulation --runs 1000):
# scenario name -> (rollback for harm, keep)
DOCUMENTED = {
    "A/A, 2 arms, 3 guardrails, 50% base": (0.046, 0.013),
    "A/A, 2 arms, 3 guardrails, 1% base": (0.040, 0.001),
    "A/A, 1 arm, 1 guardrail, 50% base": (0.034, 0.027),
    "A/B, +5% primary, 1 arm, 50% base": (0.019, 0.691),
    "harm: guardrail -10% (2x margin), 1 arm": (1.000, 0.000),
}


def se(p: float, runs: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0025) / runs)


def scenario(name_start: str):
    return next(s for s in SCENARIOS if s.name.startswith(name_start))


@pytest.mark.parametrize(
    "name, runs",
    [
        ("A/A, 2 arms, 3 guardrails, 50%", 400),
        ("A/A, 2 arms, 3 guardrails, 1%", 300),
        ("A/A, 1 arm, 1 guardrail, 50%", 400),
    ],
)
def test_no_effect_is_rarely_rolled_back_or_kept(name, runs):
    """P(ever rolled back for harm) <= alpha and P(ever kept) <= alpha / 2, whatever the
    number of guardrails and arms, under a look every 5 minutes and a 3x overrun."""
    s = scenario(name)
    out = simulate(s, runs, seed=7)
    harm, keep = out.harm_rollbacks / runs, out.keeps / runs
    assert harm <= 0.05 + 2.33 * se(0.05, runs), harm
    assert keep <= 0.025 + 2.33 * se(0.025, runs), keep
    documented_harm, documented_keep = DOCUMENTED[s.name]
    assert abs(harm - documented_harm) <= 4 * se(documented_harm, runs)
    assert abs(keep - documented_keep) <= 4 * se(documented_keep, runs)


@pytest.mark.parametrize(
    "name, runs, column",
    [("A/B, +5% primary", 400, 1), ("harm: guardrail -10%", 300, 0)],
)
def test_real_effects_are_found_with_the_documented_power(name, runs, column):
    s = scenario(name)
    out = simulate(s, runs, seed=11)
    rate = (out.harm_rollbacks if column == 0 else out.keeps) / runs
    documented = DOCUMENTED[s.name][column]
    assert abs(rate - documented) <= 4 * se(documented, runs), rate
