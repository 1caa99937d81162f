"""Simulation of the novelty flag (``stats.time_views``): how often it flags an effect that does
not fade, and how often it catches one that does.

Unit-level data, summarised the way the time-view SQL summarises it. Each experiment has a
control and ``arms`` treatment arms of ``units`` units each, entering uniformly over
``days_running`` days. Day ``k`` since a unit's first exposure (``k < window_days``) is analysed
once it is complete: ``entry + k + 1 <= days_running``, so later days have fewer units. Unit
``i``'s number of events on day ``k`` is Poisson(``lambda_i * base * decay^k * (1 + effect_k)``)
with ``lambda_i ~ Gamma(shape, 1 / shape)``: a unit's days are correlated (active users stay
active) and activity falls with the days since exposure in every arm, so a constant relative
effect is a shrinking absolute one. Two metrics per arm: the count of events (kind ``count``)
and whether there was any (``binomial``). Per metric and arm the per-day relative lifts go
through ``novelty_trend``; the family of metrics x arms through ``novelty_flags`` (Holm).

Run ``python -m stats.novelty_simulation`` (options: ``--experiments``, ``--seed``); the figures
are in docs/statistics.md, "Time views".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from .estimators import SampleStats
from .time_views import day_effect, novelty_flags, novelty_trend

KINDS = ("count", "binomial")


@dataclass(frozen=True)
class Scenario:
    name: str
    effects: tuple[float, ...]  # relative effect on day k since exposure, k = 0 .. window - 1


@dataclass(frozen=True)
class FlagRate:
    scenario: str
    experiments: int
    any_flag: float  # share of experiments with at least one flag (the family)
    per_test: float  # share of (metric, arm) tests flagged
    tested: float  # share of (metric, arm) tests with a trend (enough usable days)

    def mc_se(self) -> float:
        """Monte Carlo standard error of ``any_flag``."""
        p = self.any_flag
        return float(np.sqrt(max(p * (1 - p), 1e-12) / self.experiments))


WINDOW_DAYS = 7
SCENARIOS = (
    Scenario("no effect", (0.0,) * WINDOW_DAYS),
    Scenario("constant +10%", (0.10,) * WINDOW_DAYS),
    Scenario("constant -10%", (-0.10,) * WINDOW_DAYS),
    Scenario("fading +30% x 0.6^k", tuple(0.30 * 0.6**k for k in range(WINDOW_DAYS))),
)


def _day_stats(values: np.ndarray, complete: np.ndarray) -> list[SampleStats]:
    """Per day k: the sufficient statistics of the units whose day k is complete."""
    out = []
    for k in range(values.shape[1]):
        v = values[complete[:, k], k]
        out.append(SampleStats(n=int(v.size), sum=float(v.sum()), sum_sq=float((v * v).sum())))
    return out


def simulate(
    scenario: Scenario,
    *,
    experiments: int = 2000,
    units: int = 1000,
    arms: int = 2,
    days_running: int = 14,
    base: float = 0.6,
    decay: float = 0.8,
    shape: float = 1.0,
    alpha: float = 0.05,
    seed: int = 20260101,
) -> FlagRate:
    """The scenario's flag rates over ``experiments`` simulated experiments."""
    rng = np.random.default_rng(seed)
    window = len(scenario.effects)
    days = np.arange(window)
    rates = base * decay**days
    lifts = np.asarray(scenario.effects)
    any_flag = flagged = tested = 0
    for _ in range(experiments):
        per_arm = []
        for arm in range(arms + 1):
            activity = rng.gamma(shape, 1.0 / shape, size=units)
            mean = activity[:, None] * rates[None, :] * (1.0 + (lifts if arm else 0.0))
            counts = rng.poisson(mean).astype(float)
            entry = rng.integers(0, days_running, size=units)
            complete = entry[:, None] + days[None, :] + 1 <= days_running
            per_arm.append(
                {
                    "count": _day_stats(counts, complete),
                    "binomial": _day_stats((counts > 0).astype(float), complete),
                }
            )
        p_values: list[float | None] = []
        for kind in KINDS:
            control = per_arm[0][kind]
            for arm in range(1, arms + 1):
                effects = [
                    day_effect(c, t, kind, alpha)
                    for c, t in zip(control, per_arm[arm][kind], strict=True)
                ]
                usable = [(k, e) for k, e in enumerate(effects) if e.rel_variance is not None]
                trend = novelty_trend(
                    [k for k, _ in usable],
                    [e.lift_rel for _, e in usable],
                    [e.rel_variance for _, e in usable],
                )
                p_values.append(trend.p_value if trend else None)
        flags = novelty_flags(p_values, alpha)
        tested += sum(p is not None for p in p_values)
        flagged += sum(f.fading for f in flags)
        any_flag += any(f.fading for f in flags)
    tests = experiments * arms * len(KINDS)
    return FlagRate(
        scenario.name, experiments, any_flag / experiments, flagged / tests, tested / tests
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args(argv)
    print("| scenario | experiments with a flag (family of 4) | tests flagged | tested |")
    print("|---|---|---|---|")
    for scenario in SCENARIOS:
        r = simulate(scenario, experiments=args.experiments, seed=args.seed)
        print(
            f"| {r.scenario} | {r.any_flag:.3f} ± {1.96 * r.mc_se():.3f} | {r.per_test:.3f} "
            f"| {r.tested:.2f} |"
        )


if __name__ == "__main__":
    main()
