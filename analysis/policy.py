"""The decision policy: how the error budget is split, when a snapshot is a look, and the
function that turns per-variant statistics into keep / extend / rollback (pure, no ORM).

The pipeline (analysis/services.py) and the decision-level simulation (analysis/simulation.py)
both call ``evaluate``: the simulation measures the code that acts. docs/statistics.md
"Decision policy" states the budget and argues each choice.

Error budget, with alpha the experiment's alpha (default 0.05), K treatment arms, P primary
metrics and G guardrails:
- rollback for harm: SRM (always-valid, at ALPHA_SRM) plus one one-sided harm test per
  (primary or guardrail) x arm at (alpha - ALPHA_SRM) / ((P + G) K) (Bonferroni), each
  sequential over the looks, so P(ever rolled back | no effect anywhere) <= alpha;
- keep: one-sided improvement per primary x arm at alpha / (2 P K) (the two-sided test at
  alpha / (P K)), so P(ever keep | no effect) <= alpha / 2; guardrails must be non-inferior,
  an intersection-union test at alpha (Berger 1982) on the same interval's other side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from analysis.recommendations import (
    Decision,
    Extension,
    Finding,
    MetricOutcome,
    check_srm,
    decide_arm,
    decide_experiment,
)
from stats import (
    AnalysisConfig,
    MetricResult,
    SampleStats,
    analyze_metric,
    benjamini_hochberg,
    ci_alpha,
)
from stats.srm import SRM_P_THRESHOLD

ALPHA_SRM = SRM_P_THRESHOLD  # the share of the rollback budget spent on sample-ratio checks
MIN_LOOK_STEP = 0.01  # a new group-sequential look per 1% of the planned information
MIN_ARM_UNITS = 100  # no decision before every arm has this many units
DEFAULT_TUNING_N = 5000  # confidence-sequence tuning size without a planned sample
EMPTY = SampleStats(n=0, sum=0.0, sum_sq=0.0)

COLLECTING, LOOK, FINAL, BETWEEN, FROZEN = "collecting", "look", "final", "between", "frozen"


@dataclass(frozen=True)
class MetricDef:
    key: str
    kind: str
    role: str  # primary | secondary | guardrail
    direction: str = "increase"
    margin: float | None = None  # non-inferiority margin (relative)
    cuped: bool = False
    name: str = ""


@dataclass(frozen=True)
class Plan:
    """What every comparison of an experiment shares."""

    alpha: float
    weights: Mapping[str, float]  # variant key -> weight, control included
    control: str
    metrics: Sequence[MetricDef]
    planned: int | None = None  # total planned units over all arms
    policy: str = "superiority"  # or do_no_harm
    min_arm_units: int = MIN_ARM_UNITS

    @property
    def treatments(self) -> list[str]:
        return [k for k in self.weights if k != self.control]

    @property
    def method(self) -> str:
        return "group_sequential" if self.planned else "sequential"

    def pair_planned(self, treatment: str) -> int | None:
        if not self.planned:
            return None
        total = sum(self.weights.values()) or 1.0
        share = (self.weights[self.control] + self.weights[treatment]) / total
        return max(2, round(self.planned * share))

    def count(self, role: str) -> int:
        return sum(1 for m in self.metrics if m.role == role)

    def levels(self, metric: MetricDef) -> tuple[float, float]:
        """(alpha_good, alpha_bad): the one-sided levels of the deciding interval's sides."""
        k = max(len(self.treatments), 1)
        harm_tests = (self.count("primary") + self.count("guardrail")) * k
        harm = (self.alpha - ALPHA_SRM) / max(harm_tests, 1)
        if metric.role == "guardrail":
            return self.alpha, harm
        if metric.role == "primary":
            if self.policy == "do_no_harm":
                return self.alpha, harm
            return self.alpha / (2.0 * max(self.count("primary"), 1) * k), harm
        return self.alpha / 2.0, self.alpha / 2.0

    def margin(self, metric: MetricDef) -> float | None:
        judged = metric.role == "guardrail" or (
            metric.role == "primary" and self.policy == "do_no_harm"
        )
        if judged:
            return metric.margin or 0.0
        return metric.margin

    def config(
        self,
        metric: MetricDef,
        treatment: str,
        looks: Sequence[float],
        *,
        p_values: bool = True,
        levels: tuple[float, float] | None = None,
    ) -> AnalysisConfig:
        good, bad = levels or self.levels(metric)
        planned = self.pair_planned(treatment)
        return AnalysisConfig(
            kind=metric.kind,
            # The two-sided level of the shown p-values: the improvement test's for primaries and
            # secondaries, the harm test's for guardrails.
            alpha=min(2.0 * (bad if metric.role == "guardrail" else good), 0.999),
            alpha_good=good,
            alpha_bad=bad,
            method=self.method,
            tuning_n=planned or DEFAULT_TUNING_N,
            planned_n=planned,
            previous_fractions=tuple(looks),
            cuped=metric.cuped,
            margin=self.margin(metric),
            direction=metric.direction,
            p_values=p_values,
        )


# --- looks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LookStatus:
    """Whether this snapshot may decide, and why."""

    kind: str  # collecting | look | final | between | frozen
    fractions: dict[str, float]  # treatment -> information fraction now (group-sequential)
    looks: dict[str, list[float]]  # treatment -> counted looks including this one
    units_needed: int  # collecting: units (all arms) before a first decision
    message: str

    @property
    def acts(self) -> bool:
        return self.kind in (LOOK, FINAL)

    @property
    def stored(self) -> bool:
        return self.kind in (COLLECTING, LOOK, FINAL)


def look_status(
    plan: Plan, units: Mapping[str, int], previous_looks: Mapping[str, Sequence[float]]
) -> LookStatus:
    """A snapshot decides only at a counted look. Before every arm has ``min_arm_units`` it is
    'collecting'. With a planned sample (group-sequential), a look is counted when some arm's
    information grew by MIN_LOOK_STEP since its last look, or reached the plan (the final
    analysis); snapshots in between are not stored, and after the final analysis the decision
    is frozen. Without a plan (confidence sequence, valid at every snapshot) every snapshot past
    collecting is a look."""
    weight_sum = sum(w for w in plan.weights.values() if w > 0) or 1.0
    short = [k for k, w in plan.weights.items() if w > 0 and units.get(k, 0) < plan.min_arm_units]
    if short:
        needed = max(math.ceil(plan.min_arm_units * weight_sum / plan.weights[k]) for k in short)
        if plan.planned:
            needed = max(needed, math.ceil(plan.planned * MIN_LOOK_STEP))
        have = sum(units.values())
        return LookStatus(
            COLLECTING,
            {},
            {k: list(v) for k, v in previous_looks.items()},
            needed,
            f"Collecting data: {have:,} of about {needed:,} units before a first decision "
            f"(at least {plan.min_arm_units} in every arm).",
        )
    if not plan.planned:
        return LookStatus(LOOK, {}, {}, 0, "")
    fractions: dict[str, float] = {}
    looks: dict[str, list[float]] = {}
    new_look = final = False
    all_done = True
    for t in plan.treatments:
        planned = plan.pair_planned(t) or 1
        fraction = (units.get(plan.control, 0) + units.get(t, 0)) / planned
        earlier = [float(x) for x in previous_looks.get(t, [])]
        last = earlier[-1] if earlier else 0.0
        done = last >= 1.0
        all_done = all_done and done
        fractions[t] = fraction
        if not done and (fraction >= last + MIN_LOOK_STEP or fraction >= 1.0 > last):
            new_look = True
            final = final or fraction >= 1.0
        looks[t] = earlier
    if all_done:
        return LookStatus(
            FROZEN,
            fractions,
            looks,
            0,
            "The final analysis at the planned sample is done: its decision stands; later data "
            "does not change it (docs/statistics.md, 'Running past the plan').",
        )
    if not new_look:
        step = MIN_LOOK_STEP
        nxt = min((looks[t][-1] if looks[t] else 0.0) + step for t in plan.treatments if t in looks)
        return LookStatus(
            BETWEEN,
            fractions,
            looks,
            0,
            f"No new look: information {max(fractions.values()):.1%} of the plan; the next "
            f"look is at {nxt:.0%}.",
        )
    for t in plan.treatments:
        earlier = looks[t]
        last = earlier[-1] if earlier else 0.0
        if last < 1.0 and fractions[t] > last:
            looks[t] = [*earlier, round(fractions[t], 6)]
    return LookStatus(FINAL if final else LOOK, fractions, looks, 0, "")


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    metric: MetricDef
    variant: str
    result: MetricResult
    config: AnalysisConfig
    adjusted_p: float | None = None
    error: str | None = None

    @property
    def outcome(self) -> MetricOutcome:
        r = self.result
        return MetricOutcome(
            metric=self.metric.key,
            role=self.metric.role,
            variant=self.variant,
            lift_rel=r.lift_rel,
            ci_low=r.ci_low,
            ci_high=r.ci_high,
            improved=r.improved and not self.error,
            harmed=r.harmed and not self.error,
            non_inferior=None if self.error else r.non_inferior,
            name=self.metric.name,
            direction=self.metric.direction,
            margin=None if r.non_inferior is None else float(self.metric.margin or 0.0),
            alpha=(r.alpha_good or 0) + (r.alpha_bad or 0) or self.config.alpha,
            error=self.error,
        )


@dataclass
class Evaluation:
    status: LookStatus
    comparisons: list[Comparison]
    findings: list[Finding]
    arms: dict[str, Decision] = field(default_factory=dict)
    decision: Decision | None = None

    @property
    def unhealthy(self) -> list[str]:
        return [f.message for f in self.findings if f.unhealthy]


def compare(
    plan: Plan,
    stats: Mapping[str, Mapping[str, SampleStats]],
    looks: Mapping[str, Sequence[float]],
    *,
    errors: Mapping[str, str] | None = None,
    p_values: bool = True,
) -> list[Comparison]:
    """Every (metric, treatment) against control; secondaries Benjamini-Hochberg adjusted."""
    errors = errors or {}
    out: list[Comparison] = []
    for metric in plan.metrics:
        by_arm = stats.get(metric.key, {})
        control = by_arm.get(plan.control, EMPTY)
        for t in plan.treatments:
            config = plan.config(metric, t, looks.get(t, ()), p_values=p_values)
            if metric.key in errors:
                result = analyze_metric(EMPTY, EMPTY, config)
                out.append(Comparison(metric, t, result, config, error=errors[metric.key]))
                continue
            result = analyze_metric(control, by_arm.get(t, EMPTY), config)
            out.append(Comparison(metric, t, result, config, error=result.error))
    _adjust_secondaries(plan, stats, looks, out, p_values)
    return out


def _adjust_secondaries(
    plan: Plan,
    stats: Mapping[str, Mapping[str, SampleStats]],
    looks: Mapping[str, Sequence[float]],
    comparisons: list[Comparison],
    p_values: bool,
) -> None:
    """Benjamini-Hochberg over all secondary comparisons; their intervals rebuilt at the
    false-coverage-rate level alpha R / m (Benjamini & Yekutieli 2005)."""
    secondaries = [c for c in comparisons if c.metric.role == "secondary" and not c.error]
    if not secondaries:
        return
    adjusted = benjamini_hochberg([c.result.p_value for c in secondaries])
    rejected = sum(1 for q in adjusted if q is not None and q < plan.alpha)
    level = ci_alpha("benjamini_hochberg", plan.alpha, len(secondaries), rejected)
    for comp, q in zip(secondaries, adjusted, strict=True):
        comp.adjusted_p = q
        first = comp.result
        if not math.isclose(level, plan.alpha):
            by_arm = stats.get(comp.metric.key, {})
            config = plan.config(
                comp.metric,
                comp.variant,
                looks.get(comp.variant, ()),
                p_values=p_values,
                levels=(level / 2.0, level / 2.0),
            )
            rebuilt = analyze_metric(
                by_arm.get(plan.control, EMPTY), by_arm.get(comp.variant, EMPTY), config
            )
            comp.result = replace(
                rebuilt,
                p_value=first.p_value,
                fixed_p_value=first.fixed_p_value,
                cs_p_value=first.cs_p_value,
            )
            comp.config = config
        significant = q is not None and q < plan.alpha
        comp.result = replace(
            comp.result,
            significant=significant,
            improved=significant and first.lift_abs is not None and _good(comp, first),
            harmed=significant and first.lift_abs is not None and not _good(comp, first),
        )


def _good(comp: Comparison, result: MetricResult) -> bool:
    d = result.lift_abs or 0.0
    return d > 0 if comp.metric.direction == "increase" else d < 0


def health(plan: Plan, units: Mapping[str, int], extra: Sequence[Finding] = ()) -> list[Finding]:
    """The sample-ratio check (always valid, so it may be read at every snapshot) plus the
    findings the caller computed from the database (multi-exposure, empty arms...)."""
    keys = list(plan.weights)
    srm = check_srm([units.get(k, 0) for k in keys], [plan.weights[k] for k in keys])
    return [srm, *extra]


def evaluate(
    plan: Plan,
    stats: Mapping[str, Mapping[str, SampleStats]],
    units: Mapping[str, int],
    previous_looks: Mapping[str, Sequence[float]],
    *,
    findings: Sequence[Finding] = (),
    errors: Mapping[str, str] | None = None,
    extensions: Mapping[str, Extension | None] | None = None,
    past_end: bool = False,
    horizon_reason: str = "",
    p_values: bool = True,
) -> Evaluation:
    """The whole decision for one snapshot. ``status.acts`` says whether it may act; a
    collecting snapshot gets 'extend' with the collecting message and no per-metric flags;
    snapshots between looks and after the final analysis are evaluated no further (the caller
    stores nothing for them)."""
    status = look_status(plan, units, previous_looks)
    if not status.stored:  # nothing is stored or acted on: no statistics, no health checks
        return Evaluation(status, [], list(findings))
    all_findings = health(plan, units, findings)
    looks = status.looks if plan.planned else {}
    comparisons = compare(plan, stats, looks, errors=errors, p_values=p_values)
    for metric in plan.metrics:  # statistics the engine found impossible (the database's
        if metric.key in (errors or {}):  # own failures come in as findings already)
            continue
        failed = next((c for c in comparisons if c.metric is metric and c.error), None)
        if failed is not None:
            all_findings.append(
                Finding(
                    "metric_error",
                    "warning",
                    f"'{metric.name or metric.key}' could not be computed: {failed.error}. The "
                    "other metrics and the decision go on without it.",
                    None,
                )
            )
    evaluation = Evaluation(status, comparisons, all_findings)
    if status.kind == COLLECTING:
        collecting = Decision("extend", [status.message], cause=COLLECTING)
        evaluation.decision = collecting
        evaluation.arms = dict.fromkeys(plan.treatments, collecting)
        return evaluation
    unhealthy = evaluation.unhealthy
    for t in plan.treatments:
        mine = [c for c in comparisons if c.variant == t]
        final = bool(plan.planned) and status.fractions.get(t, 0.0) >= 1.0
        evaluation.arms[t] = decide_arm(
            [c.outcome for c in mine],
            unhealthy_reasons=unhealthy,
            policy=plan.policy,
            past_horizon=final or past_end,
            extension=(extensions or {}).get(t),
            horizon_reason=horizon_reason
            or (
                "Final analysis at the planned sample: no detectable improvement. Stop the "
                "experiment."
                if final
                else ""
            ),
        )
    evaluation.decision = decide_experiment(evaluation.arms)
    return evaluation
