"""The sequential quantile bound the release monitor uses (Woodruff SE per arm, clustered by
unit, in the one-sided asymptotic confidence sequence of stats.sequential): under no
difference, watched after every 400 units up to 8,000 per arm (20 looks), it crosses at most at
its level (docs/statistics.md "Guarded releases")."""

import numpy as np
import pytest

from releases.policy import MetricSpec, QuantileArms, check_metric
from stats.quantiles import arm_quantile

pytestmark = pytest.mark.slow


def _arm(rng, units):
    requests = 1 + rng.poisson(2.0, units)
    values = rng.lognormal(np.log(100.0), 0.6, int(requests.sum()))
    return values, np.repeat(np.arange(units), requests), np.cumsum(requests)


def crossing_rate(q: float, runs: int, looks: range, seed: int, level: float = 0.05) -> float:
    """The share of A/A sequences whose harm bound ever crosses, over ``looks`` (units per arm)."""
    rng = np.random.default_rng(seed)
    crossed = 0
    spec = MetricSpec("latency", "quantile", direction="decrease", quantile=q)
    for _ in range(runs):
        base, new = _arm(rng, looks[-1]), _arm(rng, looks[-1])
        for n in looks:
            arms = []
            for values, units, ends in (base, new):
                k = ends[n - 1]
                try:
                    arms.append(arm_quantile(values[:k], q, "arm", units=units[:k]))
                except ValueError:
                    break
            if len(arms) < 2:
                continue
            if check_metric(spec, QuantileArms(*arms), 2 * n, level, 1000).harmed:
                crossed += 1
                break
    return crossed / runs


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_the_sequential_quantile_bound_holds_its_level_under_continuous_monitoring(q):
    level, runs = 0.05, 120
    rate = crossing_rate(q, runs, range(400, 8_001, 400), seed=int(q * 1000), level=level)
    print(f"p{q * 100:g}: {rate:.3f} of {runs} A/A sequences crossed")
    # at most the level plus two Monte Carlo standard errors
    assert rate <= level + 2 * (level * (1 - level) / runs) ** 0.5
