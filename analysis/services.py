"""analysis_run(experiment_id): aggregate in SQL -> statistics -> persist a snapshot."""

import logging
from dataclasses import asdict
from typing import Any

from django.db import transaction
from django.utils import timezone

from analysis import aggregation
from analysis.models import AnalysisRun, ResultRow, ResultSnapshot, RunStatus
from analysis.recommendations import MetricOutcome, decide_arm, decide_experiment
from analysis.stats import AnalysisConfig, SampleStats, analyze_metric, srm_test
from experiments.models import Experiment, ExperimentStatus
from experiments.services import experiment_rollback

logger = logging.getLogger(__name__)
DEFAULT_TUNING_N = 5000


def analysis_run_create(*, experiment: Experiment, trigger: str) -> AnalysisRun:
    return AnalysisRun.objects.create(experiment=experiment, trigger=trigger)


def analysis_enqueue(experiment: Experiment, trigger: str) -> int:
    """Record a queued run and send its task once the transaction commits."""
    from analysis.tasks import run_analysis  # tasks import this module

    run = analysis_run_create(experiment=experiment, trigger=trigger)
    transaction.on_commit(lambda: run_analysis.delay(experiment.pk, run.pk))
    return run.pk


def _status(result: Any, role: str) -> str:
    if result.harmed:
        return "harmed"
    if result.improved:
        return "improved"
    if role == "guardrail" and result.non_inferior:
        return "non_inferior"
    return "neutral"


def analysis_run(*, experiment_id: int, run_id: int | None = None) -> ResultSnapshot | None:
    """Compute and store one snapshot of the experiment; idempotent for a given cut-off."""
    experiment = Experiment.objects.select_related("project").get(pk=experiment_id)
    run = AnalysisRun.objects.filter(pk=run_id).first() if run_id else None
    if run is None:
        run = analysis_run_create(experiment=experiment, trigger="direct")
    run.status = RunStatus.RUNNING
    run.started_at = timezone.now()
    run.save(update_fields=["status", "started_at"])
    try:
        snapshot = _compute(experiment, run)
    except Exception as exc:
        run.status = RunStatus.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        raise
    run.status = RunStatus.SUCCEEDED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at"])
    return snapshot


def _compute(experiment: Experiment, run: AnalysisRun) -> ResultSnapshot:
    through = timezone.now()
    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    variants = list(experiment.variants.all())
    control = next(v for v in variants if v.is_control)
    treatments = [v for v in variants if not v.is_control]
    counts = aggregation.exposure_counts(experiment.pk, since, through)
    observed = [counts.units_by_variant.get(v.pk, 0) for v in variants]
    total = sum(observed)
    srm = srm_test(observed, [v.weight for v in variants])
    multi_share = counts.multi_variant_units / max(1, total + counts.multi_variant_units)
    warnings: list[str] = []
    unhealthy: list[str] = []
    if total == 0:
        warnings.append("No exposures yet: check that your service posts exposure events.")
    if srm.flagged:
        unhealthy.append(
            f"Sample ratio mismatch (p = {srm.p_value:.2g}): the split of units differs from "
            "the configured weights; check assignment and exposure logging."
        )
    if multi_share > 0.5:
        unhealthy.append(
            f"{multi_share:.0%} of exposed units saw more than one variant; check exposure logging."
        )
    elif multi_share > 0.01:
        warnings.append(f"{multi_share:.1%} of exposed units saw more than one variant (excluded).")

    planned = experiment.planned_sample_size
    method = "group_sequential" if planned else "sequential"
    ems = list(experiment.experiment_metrics.select_related("metric"))
    n_primary = max(1, sum(1 for em in ems if em.role == "primary"))
    rows: list[ResultRow] = []
    outcomes: dict[str, list[MetricOutcome]] = {t.key: [] for t in treatments}
    for em in ems:
        metric = em.metric
        spec = aggregation.MetricSpec(
            key=metric.key,
            kind=metric.kind,
            event_name=metric.event_name,
            denominator_event=metric.denominator_event,
            window_hours=float(metric.conversion_window_hours),
            winsorize_quantile=metric.winsorize_quantile,
            cuped=metric.cuped,
        )
        stats = aggregation.metric_sufficient_stats(
            experiment_id=experiment.pk,
            project_id=experiment.project_id,
            metric=spec,
            since=since,
            through=through,
        )
        empty = SampleStats(n=0, sum=0.0, sum_sq=0.0)
        c_stats = stats.get(control.pk, empty)
        rows.append(_row(em, control, c_stats, None))
        alpha = experiment.alpha
        if em.role == "primary":
            alpha = alpha / n_primary / max(1, len(treatments))
        for t in treatments:
            t_stats = stats.get(t.pk, empty)
            config = AnalysisConfig(
                kind=metric.kind,
                alpha=alpha,
                method=method,
                tuning_n=planned or DEFAULT_TUNING_N,
                planned_n=planned,
                cuped=metric.cuped,
                margin=em.non_inferiority_margin if em.role == "guardrail" else None,
                direction=metric.direction,
            )
            result = analyze_metric(c_stats, t_stats, config)
            rows.append(_row(em, t, t_stats, result))
            outcomes[t.key].append(
                MetricOutcome(
                    metric=metric.key,
                    role=em.role,
                    variant=t.key,
                    lift_rel=result.lift_rel,
                    ci_low=result.ci_low,
                    ci_high=result.ci_high,
                    improved=result.improved,
                    harmed=result.harmed,
                    non_inferior=result.non_inferior,
                )
            )
    past_horizon = bool(
        (planned and total >= planned) or (experiment.end_date and through >= experiment.end_date)
    )
    arms = {
        key: decide_arm(
            items,
            unhealthy_reasons=unhealthy,
            policy=experiment.decision_policy,
            past_horizon=past_horizon,
        )
        for key, items in outcomes.items()
    }
    decision = decide_experiment(arms)
    health = {
        "srm_p_value": srm.p_value,
        "srm_flagged": srm.flagged,
        "units": total,
        "units_by_variant": {v.key: counts.units_by_variant.get(v.pk, 0) for v in variants},
        "multi_variant_units": counts.multi_variant_units,
        "multi_variant_share": multi_share,
        "warnings": warnings + unhealthy,
        "healthy": not unhealthy,
    }
    with transaction.atomic():
        snapshot = ResultSnapshot.objects.create(
            experiment=experiment,
            run=run,
            computed_at=timezone.now(),
            data_through=through,
            phase=experiment.phase,
            method=method,
            total_units=total,
            health=health,
            recommendation=decision.action,
            reasons=decision.reasons,
            arms=[
                {"variant": k, "action": d.action, "reasons": d.reasons} for k, d in arms.items()
            ],
        )
        for row in rows:
            row.snapshot = snapshot
        ResultRow.objects.bulk_create(rows)
        if (
            decision.action == "rollback"
            and decision.harm
            and experiment.auto_rollback
            and experiment.status == ExperimentStatus.RUNNING
        ):
            experiment_rollback(experiment=experiment, reason="; ".join(decision.reasons))
    return snapshot


def _row(em: Any, variant: Any, stats: SampleStats, result: Any) -> ResultRow:
    metric = em.metric
    row = ResultRow(
        metric=metric,
        metric_key=metric.key,
        metric_kind=metric.kind,
        role=em.role,
        variant=variant.key,
        is_control=variant.is_control,
        **asdict(stats),
    )
    if stats.n:
        row.mean = (
            (stats.sum / stats.den_sum)
            if metric.kind == "ratio" and stats.den_sum
            else (stats.sum / stats.n)
        )
    if result is not None:
        row.lift_abs = result.lift_abs
        row.lift_rel = result.lift_rel
        row.ci_low = result.ci_low
        row.ci_high = result.ci_high
        row.p_value = result.p_value
        row.fixed_p_value = result.fixed_p_value
        row.method = result.method
        row.significant = result.significant
        row.status = _status(result, em.role)
        row.details = {k: v for k, v in asdict(result).items() if _jsonable(v)}
    return row


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple | dict)
