"""Store what the policy decided about a cut-off: the snapshot (health, recommendation, arms,
looks) and one row per metric and arm with its statistics and comparison."""

import math
from dataclasses import asdict
from typing import Any

from django.utils import timezone

from analysis import aggregation
from analysis.compute import CutoffEvaluation
from analysis.models import AnalysisRun, ResultRow, ResultSnapshot
from analysis.policy import COLLECTING, EMPTY, LOOK, Comparison
from analysis.recommendations import Decision, Finding, metric_status
from experiments.models import Experiment, ExperimentMetric, Variant
from stats import SampleStats
from stats.analyze import inconsistency
from stats.estimators import arm_estimate


def snapshot_rows(cut: CutoffEvaluation) -> list[ResultRow]:
    """The control's row and one row per comparison, per metric, in the experiment's order
    (not yet attached to a snapshot)."""
    plan, stats, evaluation = cut.plan, cut.stats, cut.evaluation
    rows = []
    for em in cut.ems:
        key = em.metric.key
        caps = cut.aggregates[key].caps if key in cut.aggregates else {}
        rows.append(
            result_row(em, plan.control, stats.get(key, {}).get(plan.control, EMPTY), None, caps)
        )
        for comp in (c for c in evaluation.comparisons if c.metric.key == key):
            t_stats = stats.get(key, {}).get(comp.variant, EMPTY)
            rows.append(result_row(em, comp.variant, t_stats, comp, caps, evaluation.status.kind))
    return rows


def snapshot_save(
    experiment: Experiment, run: AnalysisRun, cut: CutoffEvaluation, rows: list[ResultRow]
) -> ResultSnapshot:
    """Create the snapshot and its rows (the caller holds the transaction)."""
    evaluation, plan = cut.evaluation, cut.plan
    status, decision = evaluation.status, evaluation.decision
    assert decision is not None
    extension = decision.extension if decision.action == "extend" else None
    snapshot = ResultSnapshot.objects.create(
        experiment=experiment,
        run=run,
        computed_at=timezone.now(),
        data_through=cut.through,
        phase=experiment.phase,
        method=plan.method,
        look_kind=status.kind,
        total_units=cut.counts.units,
        health=health_json(cut.counts, cut.variants, evaluation.findings, cut.errors),
        recommendation=decision.action,
        cause=decision.cause,
        reasons=decision.reasons,
        arms=[_arm_json(k, d) for k, d in evaluation.arms.items()],
        ship_variant=decision.variant if decision.action == "keep" else "",
        extra_units=extension.units if extension else None,
        extra_days=_finite(extension.days) if extension else None,
        looks=status.looks if plan.planned else {},
    )
    for row in rows:
        row.snapshot = snapshot
    ResultRow.objects.bulk_create(rows)
    return snapshot


def health_json(
    counts: aggregation.ExposureCounts,
    variants: list[Variant],
    findings: list[Finding],
    errors: dict[str, str],
) -> dict[str, Any]:
    srm = next(f for f in findings if f.check == "srm")
    multi = next(f for f in findings if f.check == "multi_exposure")
    shown = [f for f in findings if f.severity in ("warning", "unhealthy")]
    return {
        "srm_p_value": srm.value,
        "srm_flagged": srm.unhealthy,
        "units": counts.units,
        "units_by_variant": {v.key: counts.units_by_variant.get(v.pk, 0) for v in variants},
        "multi_variant_units": counts.multi_variant_units,
        "multi_variant_share": multi.value,
        "assignment_mismatch_units": counts.assignment_mismatch,
        "warnings": [f.message for f in sorted(shown, key=lambda f: not f.unhealthy)],
        "healthy": not any(f.unhealthy for f in findings),
        "findings": [asdict(f) for f in findings if f.severity != "ok"],
        "metric_errors": errors,
    }


def _arm_json(key: str, d: Decision) -> dict[str, Any]:
    return {
        "variant": key,
        "action": d.action,
        "reasons": d.reasons,
        "harm": d.harm,
        "cause": d.cause,
        "extra_units": d.extension.units if d.extension else None,
        "extra_days": _finite(d.extension.days) if d.extension else None,
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def result_row(
    em: ExperimentMetric,
    variant: str,
    stats: SampleStats,
    comp: Comparison | None,
    caps: dict[str, float],
    look_kind: str = LOOK,
) -> ResultRow:
    """The row of one (metric, variant), not saved: the control's when ``comp`` is None, else a
    treatment's with its comparison (dimension breakdowns build theirs the same way)."""
    metric = em.metric
    row = ResultRow(
        metric=metric,
        metric_key=metric.key,
        metric_kind=metric.kind,
        role=em.role,
        variant=variant,
        is_control=comp is None,
        **asdict(stats),
    )
    if stats.n and inconsistency(stats, metric.kind) is None:
        row.mean = arm_estimate(stats, metric.kind).unadjusted_mean
    row.details = {"winsor_caps": caps} if caps else {}
    if comp is not None:
        _comparison_into(row, comp, look_kind)
    return row


def _comparison_into(row: ResultRow, comp: Comparison, look_kind: str) -> None:
    """A treatment row's comparison with the control: lift, interval, p-values, status."""
    result = comp.result
    row.lift_abs = result.lift_abs
    row.lift_rel = result.lift_rel
    row.ci_low = result.ci_low
    row.ci_high = result.ci_high
    row.p_value = result.p_value
    row.fixed_p_value = result.fixed_p_value
    row.adjusted_p_value = comp.adjusted_p
    row.alpha = comp.config.alpha  # the level of the p-values
    row.information_fraction = result.information_fraction
    row.method = result.method
    collecting = look_kind == COLLECTING  # too few units: no metric decides yet
    row.significant = result.significant and not comp.error and not collecting
    row.status = "collecting" if collecting else metric_status(comp.outcome)
    row.details.update({k: v for k, v in asdict(result).items() if _jsonable(v)})
    # How the comparison was set up, so exports can re-derive it without the pipeline's rules.
    config = comp.config
    row.details.update(
        margin=config.margin,
        tuning_n=config.tuning_n,
        planned_n=config.planned_n,
        previous_fractions=list(config.previous_fractions),
        error=comp.error,
    )


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple | dict)
