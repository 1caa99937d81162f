"""Release-level Monte Carlo: many simulated releases run through the real decision code
(``releases.policy.decide``, the function the monitor calls), looked at every minute of every
step, with three health metrics. It measures what users act on: false rollbacks of harmless
releases (A/A) and, for harmful ones, how often and how fast they are rolled back.

    python -m releases.simulation               # the table in docs/statistics.md (minutes)
    python -m releases.simulation --runs 100    # a smaller run

Traffic: ``rate`` units a minute reach the release's rule; at step percent p each unit is
served the new variation with probability p (the hash's split). Per unit: 1 + Poisson(2)
requests, each an error with probability ``error_rate`` (x ``1 + harm`` on the new variation)
and a log-normal latency (x ``1 + latency_harm``); a conversion at 10%. The metrics are errors
per request (ratio), latency p95 (quantile, event-level values clustered by unit) and the
conversion (binomial), as in a typical release. A 100% step compares with the baseline's units
of an equally long window before it, drawn from the same distribution (what the monitor reads
under no time trend). A release advances when ``decide`` says so, as the monitor does, and
stops at its first rollback or at completion; a step that never meets its minimums stops at
``max_minutes_per_step`` (held).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from stats.estimators import SampleStats
from stats.montecarlo import replicate
from stats.quantiles import arm_quantile

from .policy import (
    ADVANCE,
    COMPLETE,
    ROLLBACK,
    MeanArms,
    MetricSpec,
    Plan,
    QuantileArms,
    Step,
    StepData,
    decide,
)

METRICS = (
    MetricSpec("errors", "ratio", direction="decrease", name="Errors per request"),
    MetricSpec("latency-p95", "quantile", direction="decrease", quantile=0.95, name="p95"),
    MetricSpec("conversion", "binomial", direction="increase", name="Conversion"),
)
MEAN_METRICS = (METRICS[0], METRICS[2])
STEPS = (
    Step(1, 10, 200),
    Step(5, 10, 300),
    Step(25, 10, 1000),
    Step(50, 10, 1000),
    Step(100, 10, 1000),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    harm: float = 0.0  # relative increase of the error rate on the new variation
    latency_harm: float = 0.0  # relative increase of every latency on the new variation
    error_rate: float = 0.05
    rate: int = 600  # units a minute reaching the rule
    alpha: float = 0.05
    quantiles: bool = True  # include the p95 latency metric
    step_minutes: float | None = None  # every step's minimum minutes (None: STEPS' own)
    max_minutes_per_step: int = 120

    def plan(self) -> Plan:
        steps = STEPS
        if self.step_minutes is not None:
            steps = tuple(Step(s.percent, self.step_minutes, s.min_units) for s in STEPS)
        return Plan(self.alpha, steps, METRICS if self.quantiles else MEAN_METRICS)


SCENARIOS = {
    "aa": Scenario("A/A (no harm)"),
    "aa-long": Scenario("A/A, each step watched 60 min (300 looks)", step_minutes=60),
    "aa-low": Scenario("A/A, 250 units a minute", rate=250, max_minutes_per_step=240),
    "errors+30%": Scenario("errors +30%", harm=0.30),
    "errors+60%": Scenario("errors +60%", harm=0.60),
    "errors+100%": Scenario("errors +100%", harm=1.00),
    "latency+10%": Scenario("latency +10%", latency_harm=0.10),
    "latency+25%": Scenario("latency +25%", latency_harm=0.25),
}


class _Arm:
    """One side of one step: its units' values so far, kept as running sums (means) and as
    event arrays (quantiles)."""

    def __init__(self) -> None:
        self.n = 0
        self.sums = np.zeros(8)  # errors: s, ss, d, dd, sd; conversion: s, ss; spare
        self.latency: list[np.ndarray] = []
        self.latency_units: list[np.ndarray] = []

    def add(self, rng: np.random.Generator, k: int, error_rate: float, latency_x: float) -> None:
        if k == 0:
            return
        requests = 1 + rng.poisson(2.0, k)
        errors = rng.binomial(requests, min(error_rate, 1.0)).astype(float)
        converted = (rng.random(k) < 0.1).astype(float)
        d = requests.astype(float)
        self.sums += [
            errors.sum(), (errors**2).sum(), d.sum(), (d**2).sum(), (errors * d).sum(),
            converted.sum(), converted.sum(), 0.0,
        ]  # fmt: skip
        total = int(requests.sum())
        self.latency.append(latency_x * rng.lognormal(np.log(100.0), 0.6, total))
        self.latency_units.append(np.repeat(np.arange(self.n, self.n + k), requests))
        self.n += k

    def stats(self) -> dict[str, SampleStats]:
        s = self.sums
        return {
            "errors": SampleStats(self.n, s[0], s[1], s[2], s[3], s[4]),
            "conversion": SampleStats(self.n, s[5], s[6]),
        }

    def quantile(self, q: float, label: str):  # noqa: ANN201
        values = np.concatenate(self.latency) if self.latency else np.empty(0)
        units = np.concatenate(self.latency_units) if self.latency_units else np.empty(0, int)
        return arm_quantile(values, q, label, units=units)


def _step_data(base: _Arm, new: _Arm, minutes: float, plan: Plan, historical: bool) -> StepData:
    sb, sn = base.stats(), new.stats()
    metrics: dict[str, object] = {k: MeanArms(sb[k], sn[k]) for k in ("errors", "conversion")}
    for spec in plan.metrics:
        if spec.kind == "quantile":
            try:
                metrics[spec.key] = QuantileArms(
                    base.quantile(spec.quantile, "the baseline"), new.quantile(spec.quantile, "new")
                )
            except ValueError as exc:
                metrics[spec.key] = str(exc)
    return StepData(minutes, base.n, new.n, 0, metrics, historical)


@dataclass(frozen=True)
class Outcome:
    rolled_back: bool
    completed: bool
    minutes: float  # from the release's start to its end (or to giving up)
    step: int  # the step it ended in
    harmful_units: int  # units served the new variation before the end


def run_release(scenario: Scenario, rng: np.random.Generator) -> Outcome:
    plan = scenario.plan()
    elapsed, exposed_new = 0.0, 0
    for index, step in enumerate(plan.steps):
        share = step.percent / 100.0
        base, new = _Arm(), _Arm()
        historical = step.full  # the baseline: the window before the step, as long as it
        for minute in range(1, scenario.max_minutes_per_step + 1):
            arrivals = rng.poisson(scenario.rate)
            k_new = arrivals if historical else rng.binomial(arrivals, share)
            new.add(
                rng, k_new, scenario.error_rate * (1 + scenario.harm), 1 + scenario.latency_harm
            )
            if historical:
                base.add(rng, rng.poisson(scenario.rate), scenario.error_rate, 1.0)
            else:
                base.add(rng, arrivals - k_new, scenario.error_rate, 1.0)
            exposed_new += k_new
            decision = decide(plan, index, _step_data(base, new, minute, plan, historical))
            if decision.action == ROLLBACK:
                return Outcome(True, False, elapsed + minute, index, exposed_new)
            if decision.action == COMPLETE:
                return Outcome(False, True, elapsed + minute, index, exposed_new)
            if decision.action == ADVANCE:
                elapsed += minute
                break
        else:
            return Outcome(
                False, False, elapsed + scenario.max_minutes_per_step, index, exposed_new
            )
    raise AssertionError("the last step completes or holds")  # pragma: no cover


@dataclass(frozen=True)
class Summary:
    scenario: str
    runs: int
    rollback_rate: float
    completed_rate: float
    median_minutes_to_rollback: float | None
    median_new_units_before_rollback: float | None
    median_minutes_to_complete: float | None


def _chunk(scenario: Scenario, runs: int, seed: np.random.SeedSequence) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    return [run_release(scenario, rng) for _ in range(runs)]


def simulate(
    scenario: Scenario,
    runs: int,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> Summary:
    """``runs`` simulated releases, in seeded chunks on the machine's cores (stats.montecarlo:
    the summary depends on the seed, not on ``workers``)."""
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        print(f"  {scenario.name}: {done}/{total} ({time.monotonic() - started:.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip

    parts = replicate(
        partial(_chunk, scenario), runs, seed, workers=workers,
        progress=report if progress else None,
    )  # fmt: skip
    outcomes = [o for part in parts for o in part]
    rolled = [o for o in outcomes if o.rolled_back]
    done = [o for o in outcomes if o.completed]
    return Summary(
        scenario.name, runs, len(rolled) / runs, len(done) / runs,
        float(np.median([o.minutes for o in rolled])) if rolled else None,
        float(np.median([o.harmful_units for o in rolled])) if rolled else None,
        float(np.median([o.minutes for o in done])) if done else None,
    )  # fmt: skip


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--no-quantiles", action="store_true", help="errors and conversion only (faster)"
    )
    args = parser.parse_args(argv)
    print("| scenario | releases | rolled back | completed | median minutes to rollback | "
          "median new units before rollback | median minutes to complete |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for key in args.scenario or list(SCENARIOS):
        scenario = SCENARIOS[key]
        if args.no_quantiles:
            scenario = replace(scenario, quantiles=False, name=scenario.name + " (no quantiles)")
        s = simulate(scenario, args.runs, args.seed, progress=True)
        print(
            f"| {s.scenario} | {s.runs} | {s.rollback_rate:.3f} | {s.completed_rate:.3f} | "
            f"{_fmt(s.median_minutes_to_rollback, '.0f')} | "
            f"{_fmt(s.median_new_units_before_rollback, '.0f')} | "
            f"{_fmt(s.median_minutes_to_complete, '.0f')} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
