"""Monte Carlo check of the decision rules under continuous peeking: A/A false positives, power.

Each simulated experiment is a conversion metric (binomial, baseline rate p) with two equal
arms, analysed on the relative lift after each of ``looks`` equally spaced batches up to the
planned sample. Rules compared, all at two-sided alpha:
- naive: the fixed-horizon Welch test, declared at the first look where p < alpha;
- fixed: the same test at the planned sample only (the reference for power);
- sequential: the confidence sequence (tuned to the planned sample) excludes 0 at any look;
- group_sequential: |z| crosses the Lan-DeMets O'Brien-Fleming bound at any look.
The power scenario uses a true lift equal to the fixed design's 80%-power MDE.

Reproduce the figures in docs/statistics.md with ``python -m stats.simulation``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import group_sequential, sequential
from .fixed import two_sided_p
from .power import mde_for_sample

RULES = ("naive", "fixed", "sequential", "group_sequential")
Progress = Callable[[str, int, int], None]  # (scenario, experiments done, experiments in all)


@dataclass(frozen=True)
class SimulationConfig:
    n_experiments: int = 10_000
    looks: int = 100
    baseline_rate: float = 0.10
    planned_n_per_arm: int = 10_000
    alpha: float = 0.05
    power: float = 0.80
    seed: int = 20231105
    chunk: int = 1_000


@dataclass(frozen=True)
class SimulationReport:
    config: SimulationConfig
    mde: float  # relative lift used in the power scenario
    false_positive: dict[str, float] = field(default_factory=dict)  # A/A: share ever declaring
    power: dict[str, float] = field(default_factory=dict)  # share declaring the true improvement

    def monte_carlo_se(self, share: float) -> float:
        return math.sqrt(max(share * (1.0 - share), 1e-12) / self.config.n_experiments)


def relative_lift_arrays(
    conv_c: np.ndarray, conv_t: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relative lift, its delta-method variance, the Welch dof and a validity mask for equal
    arms of n units each: the formulas of ``estimators`` (binomial variance p (1 - p)),
    written over arrays."""
    pc, pt = conv_c / n, conv_t / n
    vc, vt = pc * (1.0 - pc), pt * (1.0 - pt)
    ok = (pc > 0) & (vc + vt > 0)
    safe_pc = np.where(ok, pc, 1.0)
    lift = (pt - pc) / safe_pc
    var = vt / (safe_pc**2 * n) + vc * pt**2 / (safe_pc**4 * n)
    ok &= var > 0
    var = np.where(ok, var, 1.0)
    dof = (vc / n + vt / n) ** 2 / ((vc**2 + vt**2) / (n**2 * (n - 1.0)) + 1e-300)
    return lift, var, np.maximum(dof, 1.0), ok


def simulate_decisions(
    relative_effect: float,
    config: SimulationConfig,
    rng: np.random.Generator,
    progress: Progress | None = None,
    scenario: str = "",
) -> dict[str, float]:
    """Share of experiments in which each rule declares a difference (for a non-zero effect:
    an improvement, i.e. a positive lift at the first declaring look)."""
    looks, alpha = config.looks, config.alpha
    batch = config.planned_n_per_arm // looks
    n = batch * np.arange(1, looks + 1, dtype=float)  # units per arm at each look
    fractions = tuple((k + 1) / looks for k in range(looks))
    bounds = np.array(group_sequential.efficacy_bounds(fractions, alpha, "obrien_fleming"))
    tuning = 2.0 * config.planned_n_per_arm
    p_c = config.baseline_rate
    p_t = p_c * (1.0 + relative_effect)
    declared = dict.fromkeys(RULES, 0)
    done = 0
    while done < config.n_experiments:
        size = min(config.chunk, config.n_experiments - done)
        conv_c = rng.binomial(batch, p_c, size=(size, looks)).cumsum(axis=1).astype(float)
        conv_t = rng.binomial(batch, p_t, size=(size, looks)).cumsum(axis=1).astype(float)
        lift, var, dof, ok = relative_lift_arrays(conv_c, conv_t, n)
        z = lift / np.sqrt(var)
        rejections = {
            "naive": ok & (two_sided_p(z, dof) < alpha),
            "sequential": ok & (sequential.p_value(lift, var, 2.0 * n, alpha, tuning) < alpha),
            "group_sequential": ok & (np.abs(z) >= bounds),
        }
        rejections["fixed"] = np.zeros_like(ok)
        rejections["fixed"][:, -1] = rejections["naive"][:, -1]
        for rule, hits in rejections.items():
            any_hit = hits.any(axis=1)
            if relative_effect != 0:
                first = hits.argmax(axis=1)
                any_hit &= lift[np.arange(size), first] > 0
            declared[rule] += int(any_hit.sum())
        done += size
        if progress is not None:
            progress(scenario, done, config.n_experiments)
    return {rule: declared[rule] / config.n_experiments for rule in RULES}


def run(
    config: SimulationConfig | None = None, progress: Progress | None = None
) -> SimulationReport:
    """A/A false-positive rates under peeking and power at the fixed design's MDE."""
    config = config or SimulationConfig()
    rng = np.random.default_rng(config.seed)
    p = config.baseline_rate
    mde = mde_for_sample(
        n_per_arm=config.planned_n_per_arm,
        baseline_mean=p,
        kind="binomial",
        alpha=config.alpha,
        power=config.power,
    )
    false_positive = simulate_decisions(0.0, config, rng, progress, "A/A")
    power = simulate_decisions(mde, config, rng, progress, "power")
    return SimulationReport(config, mde, false_positive, power)


def format_report(report: SimulationReport) -> str:
    c = report.config
    lines = [
        f"{c.n_experiments} simulated experiments per scenario, {c.looks} equally spaced looks, "
        f"baseline rate {c.baseline_rate}, {c.planned_n_per_arm} units per arm planned, "
        f"alpha {c.alpha}, seed {c.seed}",
        f"power scenario: true relative lift {report.mde:.4f} (the fixed design's "
        f"{c.power:.0%}-power MDE)",
        "",
        f"{'rule':<18}{'A/A: ever declares':>20}{'power':>10}",
    ]
    for rule in RULES:
        fp, pw = report.false_positive[rule], report.power[rule]
        lines.append(
            f"{rule:<18}{fp:>12.4f} ± {1.96 * report.monte_carlo_se(fp):.4f}"
            f"{pw:>8.4f} ± {1.96 * report.monte_carlo_se(pw):.4f}"
        )
    lines.append(
        "(± is 1.96 Monte Carlo standard errors; 'fixed' looks only at the planned sample)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=SimulationConfig.n_experiments)
    parser.add_argument("--looks", type=int, default=SimulationConfig.looks)
    parser.add_argument("--seed", type=int, default=SimulationConfig.seed)
    args = parser.parse_args(argv)
    config = SimulationConfig(n_experiments=args.experiments, looks=args.looks, seed=args.seed)

    def progress(scenario: str, done: int, total: int) -> None:
        print(f"\r{scenario}: {done}/{total} experiments", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    print(format_report(run(config, progress)))


if __name__ == "__main__":
    main()
