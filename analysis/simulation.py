"""Decision-level Monte Carlo: many simulated experiments run through the real decision code
(analysis.policy.evaluate, the function the pipeline calls), looked at every 5 minutes, with
several guardrails and arms, up to 3x the planned sample. It measures what users act on:
false rollbacks and false keeps under no effect, power and time to a decision under effects.

    python -m analysis.simulation            # the table in docs/statistics.md (a few minutes)
    python -m analysis.simulation --quick    # a smaller run

Traffic arrives at a constant rate split exactly by the weights, so every simulated experiment
takes its looks at the same information fractions (the bounds are computed once per scenario);
the outcomes are random: each metric is a conversion with its own rate per arm, drawn as
binomial counts between snapshots. Snapshots that are not looks store nothing and cannot act
in the pipeline (analysis.policy.look_status), so the simulation evaluates only the snapshots
look_status keeps, exactly as the pipeline would, and stops an experiment at its first keep,
its first rollback for harm, or its frozen final analysis.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from analysis.policy import MetricDef, Plan, evaluate, look_status
from stats import SampleStats
from stats.montecarlo import replicate

SNAPSHOT_MINUTES = 5
DAYS_TO_PLAN = 14  # traffic reaches the planned sample in two weeks of 5-minute snapshots


@dataclass(frozen=True)
class Scenario:
    name: str
    arms: int = 2  # treatment arms
    guardrails: int = 3
    base_rate: float = 0.5  # every metric's control conversion rate
    planned: int = 20000  # total units over all arms
    overrun: float = 3.0  # run to this multiple of the plan
    primary_lift: float = 0.0  # relative effect on the primary in every treatment arm
    guardrail_lift: float = 0.0  # relative effect on the first guardrail (negative = harm)
    margin: float = 0.05  # guardrails' non-inferiority margin
    policy: str = "superiority"

    def plan(self) -> Plan:
        weights = {"control": 1.0, **{f"t{i}": 1.0 for i in range(self.arms)}}
        metrics = [MetricDef("primary", "binomial", "primary")]
        metrics += [
            MetricDef(f"guard{i}", "binomial", "guardrail", margin=self.margin)
            for i in range(self.guardrails)
        ]
        return Plan(
            alpha=0.05,
            weights=weights,
            control="control",
            metrics=metrics,
            planned=self.planned,
            policy=self.policy,
        )

    def rate(self, metric: str, arm: str) -> float:
        if arm == "control":
            return self.base_rate
        if metric == "primary":
            return self.base_rate * (1 + self.primary_lift)
        if metric == "guard0":
            return self.base_rate * (1 + self.guardrail_lift)
        return self.base_rate


@dataclass
class Outcome:
    runs: int = 0
    harm_rollbacks: int = 0
    keeps: int = 0
    no_improvement: int = 0  # the final analysis said "stop: no detectable improvement"
    days_to_decision: list[float] = field(default_factory=list)

    def rate(self, count: int) -> tuple[float, float]:
        """The share and its Monte Carlo standard error."""
        p = count / self.runs if self.runs else 0.0
        return p, math.sqrt(max(p * (1 - p), 1e-12) / max(self.runs, 1))


def schedule(plan: Plan, overrun: float) -> list[tuple[float, dict[str, int], dict]]:
    """The snapshots that are stored (looks and collecting), with the units per arm and the
    counted looks before each: (days, units, previous looks). Computed once per scenario by
    calling look_status at every 5-minute snapshot, as the pipeline does."""
    assert plan.planned
    per_day = plan.planned / DAYS_TO_PLAN
    total_weight = sum(plan.weights.values())
    snapshots = int(DAYS_TO_PLAN * overrun * 24 * 60 / SNAPSHOT_MINUTES)
    out = []
    looks: dict[str, list[float]] = {}
    for i in range(1, snapshots + 1):
        days = i * SNAPSHOT_MINUTES / (24 * 60)
        units = {k: int(per_day * days * w / total_weight) for k, w in plan.weights.items()}
        status = look_status(plan, units, looks)
        if status.kind == "frozen":
            break
        if status.stored:
            out.append((days, units, {k: list(v) for k, v in looks.items()}))
            if status.acts:
                looks = status.looks
    return out


def run_one(
    scenario: Scenario, plan: Plan, snaps: list, rng: np.random.Generator
) -> tuple[str, float]:
    """One experiment: ('harm' | 'keep' | 'stop' | 'none', days at the decision)."""
    metrics = [m.key for m in plan.metrics]
    arms = list(plan.weights)
    conversions = {m: dict.fromkeys(arms, 0) for m in metrics}
    seen = dict.fromkeys(arms, 0)
    for days, units, previous in snaps:
        for arm in arms:
            new = units[arm] - seen[arm]
            if new > 0:
                for m in metrics:
                    conversions[m][arm] += int(rng.binomial(new, scenario.rate(m, arm)))
            seen[arm] = units[arm]
        stats = {
            m: {a: SampleStats(units[a], float(c), float(c)) for a, c in conversions[m].items()}
            for m in metrics
        }
        ev = evaluate(plan, stats, units, previous, p_values=False)
        if not ev.status.acts or ev.decision is None:
            continue
        if ev.decision.action == "rollback":
            return ("harm" if ev.decision.harm else "stop"), days
        if ev.decision.action == "keep":
            return "keep", days
    return "none", snaps[-1][0] if snaps else 0.0


def _chunk(
    scenario: Scenario, plan: Plan, snaps: list, runs: int, seed: np.random.SeedSequence
) -> Outcome:
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        verdict, days = run_one(scenario, plan, snaps, rng)
        out.runs += 1
        out.harm_rollbacks += verdict == "harm"
        out.keeps += verdict == "keep"
        out.no_improvement += verdict == "stop"
        if verdict in ("harm", "keep"):
            out.days_to_decision.append(days)
    return out


def simulate(
    scenario: Scenario,
    runs: int,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> Outcome:
    """``runs`` simulated experiments, in seeded chunks on the machine's cores (stats.montecarlo:
    the outcome depends on the seed, not on ``workers``)."""
    plan = scenario.plan()
    snaps = schedule(plan, scenario.overrun)

    def report(done: int, total: int) -> None:
        print(f"  {scenario.name}: {done}/{total}", file=sys.stderr, flush=True)

    parts = replicate(
        partial(_chunk, scenario, plan, snaps), runs, seed, workers=workers,
        progress=report if progress else None,
    )  # fmt: skip
    out = Outcome()
    for part in parts:
        out.runs += part.runs
        out.harm_rollbacks += part.harm_rollbacks
        out.keeps += part.keeps
        out.no_improvement += part.no_improvement
        out.days_to_decision.extend(part.days_to_decision)
    return out


SCENARIOS = (
    Scenario("A/A, 2 arms, 3 guardrails, 50% base", arms=2, guardrails=3, base_rate=0.5),
    Scenario(
        "A/A, 2 arms, 3 guardrails, 1% base", arms=2, guardrails=3, base_rate=0.01, planned=400000
    ),
    Scenario("A/A, 1 arm, 1 guardrail, 50% base", arms=1, guardrails=1, base_rate=0.5),
    Scenario(
        "A/B, +5% primary, 1 arm, 50% base",
        arms=1,
        guardrails=1,
        base_rate=0.5,
        planned=13000,
        primary_lift=0.05,
    ),
    Scenario(
        "harm: guardrail -10% (2x margin), 1 arm",
        arms=1,
        guardrails=1,
        base_rate=0.5,
        planned=13000,
        guardrail_lift=-0.10,
    ),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="300 runs per scenario")
    args = parser.parse_args(argv)
    runs = 300 if args.quick else args.runs
    print(f"{runs} simulated experiments per scenario, a snapshot every {SNAPSHOT_MINUTES} min,")
    print(f"the plan reached in {DAYS_TO_PLAN} days, run to 3x the plan; alpha 0.05.\n")
    print("| scenario | rollback for harm | keep | stop (no improvement) | median days |")
    print("|---|---|---|---|---|")
    for scenario in SCENARIOS:
        started = time.monotonic()
        out = simulate(scenario, runs, seed=1, progress=True)
        harm, harm_se = out.rate(out.harm_rollbacks)
        keep, keep_se = out.rate(out.keeps)
        stop, _ = out.rate(out.no_improvement)
        median = f"{np.median(out.days_to_decision):.1f}" if out.days_to_decision else "-"
        print(
            f"| {scenario.name} | {harm:.3f} ± {harm_se:.3f} | {keep:.3f} ± {keep_se:.3f} | "
            f"{stop:.3f} | {median} |",
            flush=True,
        )
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
