"""A guarded release's decision at one analysis of its current step (pure, no ORM): advance,
hold, roll back or complete, with the reasons and what a hold waits for.

The monitor (releases/monitor.py) and the A/A simulation (releases/simulation.py) both call
``decide``: the simulation measures the code that acts. docs/statistics.md "Guarded releases"
argues each choice; in short:

- **Within steps.** Each step is compared on its own: units exposed during the step, by the
  variation they were served in it (units served both are excluded and counted), with their
  metric events from their first exposure in the step. Within a step the split is fixed, so
  the comparison is randomised; pooling steps would compare units of different periods and
  shares (Simpson's paradox when allocation and time effects move together).
- **Family-wise harm control.** One one-sided harm test per (step, metric), each a confidence
  sequence (always valid under continuous peeking: ``stats.sequential``, Waudby-Smith et al.
  2023) at level alpha / (steps x metrics) (Bonferroni), so a harmless release is falsely
  rolled back with probability at most alpha over all steps and looks.
- **Quantiles** (p50/p95/p99) use the Woodruff standard error per arm (clustered by unit) and
  the difference's variance se_b^2 + se_n^2 (``stats.quantiles``) in the same asymptotic
  confidence sequence: the sample quantile is asymptotically linear (Bahadur 1966), which is
  what the asymptotic confidence sequence needs.
- **A 100% step** has no concurrent baseline: it is compared with the baseline's units in the
  window of equal length just before the step (blue-green's verification), which holds its
  level when nothing but the variation changed between the two windows (docs say when not).
- **No test before 200 units per side.** The confidence sequence is asymptotic; with ~100
  units on the small side of a 1% canary and skewed per-unit counts (errors), the harm side's
  crossings ran above their level under an hour of looks (releases.simulation: 0.045 of the
  family's 0.05 spent by a 2-step release at 100 units, 0.017 at 200, 0.009 at 300).
- A sample-ratio mismatch holds the release (the comparison cannot be trusted) and spends no
  rollback budget; so does a metric that cannot be computed yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stats import sequential
from stats.estimators import SampleStats, absolute_effect, arm_estimate
from stats.quantiles import ArmQuantile
from stats.srm import SRM_P_THRESHOLD, srm_test

ADVANCE, HOLD, ROLLBACK, COMPLETE = "advance", "hold", "rollback", "complete"
MIN_ARM_UNITS = 200  # no harm test before both sides have this many units (see the docstring)
MIN_TUNING_N = 1000  # the confidence sequences are tightest around this many units or more
MEAN_KINDS = ("binomial", "count", "mean", "ratio")


@dataclass(frozen=True)
class Step:
    percent: float  # share of units (reaching the release's rule) served the new variation
    min_minutes: float = 0.0
    min_units: int = 0  # per side

    @property
    def full(self) -> bool:
        return self.percent >= 100.0


@dataclass(frozen=True)
class MetricSpec:
    key: str
    kind: str  # binomial | count | mean | ratio | quantile
    role: str = "guardrail"  # guardrail | primary
    direction: str = "increase"  # which side is good: "decrease" for errors and latency
    margin: float | None = None  # tolerated harm relative to the baseline (0.02 = 2%)
    quantile: float | None = None
    name: str = ""


@dataclass(frozen=True)
class Plan:
    alpha: float
    steps: Sequence[Step]
    metrics: Sequence[MetricSpec]

    @property
    def level(self) -> float:
        """One-sided level of each (step, metric) harm test: alpha / (steps x metrics)."""
        return self.alpha / (max(len(self.steps), 1) * max(len(self.metrics), 1))

    def tuning_n(self, step: Step) -> int:
        return max(MIN_TUNING_N, 2 * int(step.min_units))


@dataclass(frozen=True)
class QuantileArms:
    baseline: ArmQuantile
    new: ArmQuantile


@dataclass(frozen=True)
class MeanArms:
    baseline: SampleStats
    new: SampleStats


@dataclass(frozen=True)
class StepData:
    """What the database holds for the current step at the cut-off."""

    elapsed_minutes: float
    units_baseline: int
    units_new: int
    excluded: int = 0  # units served both variations in the step
    # metric key -> the arms' statistics, or a string saying why there are none yet
    metrics: Mapping[str, MeanArms | QuantileArms | str] = field(default_factory=dict)
    historical: bool = False  # a 100% step: the baseline is the window before the step


@dataclass(frozen=True)
class MetricCheck:
    key: str
    kind: str
    role: str
    direction: str
    status: str  # harmed | ok | collecting | error
    baseline: float | None = None
    new: float | None = None
    difference: float | None = None
    relative: float | None = None
    lower: float | None = None  # the deciding interval: both sides at the harm level
    upper: float | None = None
    tolerated: float | None = None  # the absolute harm tolerated (margin x |baseline|)
    level: float | None = None
    harmed: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {k: _finite(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class StepDecision:
    action: str
    reasons: tuple[str, ...]
    waits_for: tuple[str, ...] = ()
    metrics: tuple[MetricCheck, ...] = ()
    srm_p_value: float | None = None


def _finite(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _effect(spec: MetricSpec, arms: MeanArms | QuantileArms) -> tuple[float, float, float, float]:
    """(baseline estimate, new estimate, difference, variance of the difference)."""
    if isinstance(arms, QuantileArms):
        b, n = arms.baseline, arms.new
        return b.estimate, n.estimate, n.estimate - b.estimate, b.se**2 + n.se**2
    base, new = arm_estimate(arms.baseline, spec.kind), arm_estimate(arms.new, spec.kind)
    effect = absolute_effect(base, new)
    return base.mean, new.mean, effect.estimate, effect.variance


def check_metric(
    spec: MetricSpec, arms: MeanArms | QuantileArms | str, units: int, level: float, tuning: int
) -> MetricCheck:
    """The one-sided harm test of one metric in one step: harmed when the confidence sequence's
    bound on the bad side is past the tolerated difference."""
    common = {"key": spec.key, "kind": spec.kind, "role": spec.role, "direction": spec.direction}
    if isinstance(arms, str):
        return MetricCheck(**common, status="collecting", note=arms)
    base, new, diff, variance = _effect(spec, arms)
    relative = diff / abs(base) if base else None
    tolerated = (spec.margin or 0.0) * abs(base)
    values = {"baseline": base, "new": new, "difference": diff, "relative": relative}
    if not (math.isfinite(diff) and math.isfinite(variance)):
        return MetricCheck(**common, **values, status="error", note="not finite")
    if variance <= 0:
        note = "no variation yet (no events, or all units alike)"
        return MetricCheck(**common, **values, status="collecting", note=note)
    half = float(sequential.halfwidth(variance, units, level, tuning, two_sided=False))
    lower, upper = diff - half, diff + half
    harmed = lower > tolerated if spec.direction == "decrease" else upper < -tolerated
    return MetricCheck(
        **common, **values, lower=lower, upper=upper, tolerated=tolerated, level=level,
        harmed=harmed, status="harmed" if harmed else "ok",
    )  # fmt: skip


def _label(spec: MetricSpec) -> str:
    return spec.name or spec.key


def _harm_reason(spec: MetricSpec, check: MetricCheck) -> str:
    worse = "higher" if spec.direction == "decrease" else "lower"
    rel = f" ({check.relative:+.1%})" if check.relative is not None else ""
    return (
        f"{_label(spec)} is {worse} with the new variation: {check.new:.4g} vs {check.baseline:.4g}"
        f"{rel}; the difference's bound {check.lower if spec.direction == 'decrease' else check.upper:.4g} "  # noqa: E501
        f"is past the tolerated {check.tolerated:.4g} at one-sided level {check.level:.2g}."
    )


def _srm(step: Step, data: StepData) -> float | None:
    """The always-valid SRM p-value of the step's split (None at 100%: no concurrent split)."""
    if data.historical or step.full or data.units_baseline + data.units_new == 0:
        return None
    share = step.percent / 100.0
    return srm_test([data.units_baseline, data.units_new], [1.0 - share, share]).p_value


def _waits(step: Step, data: StepData, checks: Sequence[MetricCheck]) -> list[str]:
    waits: list[str] = []
    if data.elapsed_minutes < step.min_minutes:
        left = step.min_minutes - data.elapsed_minutes
        waits.append(f"{left:.1f} more minutes at {step.percent:g}% (minimum {step.min_minutes:g})")
    need = max(int(step.min_units), MIN_ARM_UNITS)
    sides = [("new variation", data.units_new)]
    sides.append(
        ("baseline" + (" (before the step)" if data.historical else ""), data.units_baseline)
    )
    for side, n in sides:
        if n < need:
            waits.append(f"{need - n} more units on the {side} ({n} of {need})")
    for check in checks:
        if check.status in ("collecting", "error"):
            waits.append(f"{check.key}: {check.note}")
    return waits


def decide(plan: Plan, step_index: int, data: StepData, *, paused: bool = False) -> StepDecision:
    """The action at this analysis of step ``step_index``: rollback when any metric is harmed;
    otherwise hold on a sample-ratio mismatch, while paused, or while the step's minimums (time,
    units per side, every metric computable) are not met; otherwise advance, or complete after
    the last step."""
    step = plan.steps[step_index]
    units = data.units_baseline + data.units_new
    level, tuning = plan.level, plan.tuning_n(step)
    enough = min(data.units_baseline, data.units_new) >= MIN_ARM_UNITS
    checks = []
    for spec in plan.metrics:
        arms = data.metrics.get(spec.key, "no data yet")
        if not enough and not isinstance(arms, str):
            arms = f"collecting until both sides have {MIN_ARM_UNITS} units"
        try:
            checks.append(check_metric(spec, arms, units, level, tuning))
        except (ValueError, ZeroDivisionError) as exc:
            checks.append(MetricCheck(spec.key, spec.kind, spec.role, spec.direction, "error",
                                      note=str(exc)))  # fmt: skip
    specs = {s.key: s for s in plan.metrics}
    harmed = [c for c in checks if c.harmed]
    if harmed:
        reasons = tuple(_harm_reason(specs[c.key], c) for c in harmed)
        return StepDecision(ROLLBACK, reasons, (), tuple(checks))
    srm_p = _srm(step, data)
    if srm_p is not None and srm_p < SRM_P_THRESHOLD:
        reason = (
            f"Sample-ratio mismatch at {step.percent:g}% (p = {srm_p:.2g}): {data.units_new} new "
            f"vs {data.units_baseline} baseline units; the comparison cannot be trusted until "
            "exposure logging is fixed. Holding."
        )
        return StepDecision(HOLD, (reason,), ("a split matching the step",), tuple(checks), srm_p)
    waits = _waits(step, data, checks)
    safe = f"No harm detected at {step.percent:g}% on {len(checks)} metric(s)."
    if paused:
        return StepDecision(HOLD, (safe, "Paused: steps do not advance."), tuple(waits),
                            tuple(checks), srm_p)  # fmt: skip
    if waits:
        return StepDecision(HOLD, (safe + " Holding: not enough data yet.",), tuple(waits),
                            tuple(checks), srm_p)  # fmt: skip
    last = step_index == len(plan.steps) - 1
    if last:
        reason = f"{safe} Every step passed: the new variation is served to everyone."
        return StepDecision(COMPLETE, (reason,), (), tuple(checks), srm_p)
    following = plan.steps[step_index + 1].percent
    reason = f"{safe} The step's minimums are met: advancing to {following:g}%."
    return StepDecision(ADVANCE, (reason,), (), tuple(checks), srm_p)
