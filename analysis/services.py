"""analysis_run(experiment_id): aggregate in SQL -> the decision policy -> snapshot, then act
on live runs (auto-rollback, ramp plan, webhook). Also queueing runs and backfills.

The statistics and the decision are analysis.policy.evaluate (pure): the error budget split
over primaries, guardrails and arms, which snapshots are looks, keep / extend / rollback. This
module reads the database, stores what the policy decided and why, and acts only at looks.
"""

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analysis import aggregation
from analysis.models import AnalysisRun, ResultRow, ResultSnapshot, RunStatus
from analysis.policy import (
    COLLECTING,
    DEFAULT_TUNING_N,
    EMPTY,
    LOOK,
    Comparison,
    Evaluation,
    MetricDef,
    Plan,
    evaluate,
)
from analysis.ramps import ramp_step
from analysis.recommendations import (
    Decision,
    Extension,
    Finding,
    check_empty_arms,
    check_empty_metric,
    check_multi_exposure,
    check_no_exposures,
    check_pre_exposure_imbalance,
    check_pre_start_exposures,
    estimate_extension,
    harm_reason,
    metric_status,
)
from analysis.webhooks import webhook_enqueue
from experiments.models import Experiment, ExperimentMetric, ExperimentStatus, Variant
from experiments.services import experiment_rollback
from stats import SampleStats
from stats.analyze import inconsistency
from stats.estimators import arm_estimate

logger = logging.getLogger(__name__)


# --- queueing ---------------------------------------------------------------------------------


def analysis_run_create(
    *, experiment: Experiment, trigger: str, through: datetime | None = None
) -> AnalysisRun:
    return AnalysisRun.objects.create(experiment=experiment, trigger=trigger, data_through=through)


def analysis_enqueue(experiment: Experiment, trigger: str, through: datetime | None = None) -> int:
    """Record a queued run and send its task once the transaction commits."""
    from analysis.tasks import run_analysis  # tasks import this module

    run = analysis_run_create(
        experiment=experiment, trigger="backfill" if through else trigger, through=through
    )

    def send() -> None:
        try:
            run_analysis.delay(experiment.pk, run.pk)
        except Exception as exc:
            # The broker is down: the run can never start, so say so on it (the health panel
            # shows it) instead of leaving it queued; the caller still answers 503.
            AnalysisRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.FAILED,
                finished_at=timezone.now(),
                error=f"Could not be queued: the task broker is unavailable "
                f"({type(exc).__name__}). The next scheduled analysis retries.",
            )
            raise

    transaction.on_commit(send)
    return run.pk


def analysis_runs_expire(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Mark failed the runs no worker will finish: ``running`` since before ``older_than`` (the
    task's hard time limit: its worker died or was killed) or still ``queued`` that long (its
    message was lost). A redelivered task may still finish such a run later. Returns how many."""
    cutoff = (now or timezone.now()) - older_than
    limit = f"{older_than.total_seconds():.0f} s"
    expired = AnalysisRun.objects.filter(status=RunStatus.RUNNING, started_at__lt=cutoff).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error=f"Stale: still running after the task's time limit ({limit}); its worker "
        "probably died. The next scheduled analysis retries.",
    )
    expired += AnalysisRun.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error=f"Stale: queued for longer than the task's time limit ({limit}) and never "
        "started; its message was lost. The next scheduled analysis retries.",
    )
    return expired


# --- one run ----------------------------------------------------------------------------------


def analysis_run(
    *,
    experiment_id: int,
    run_id: int | None = None,
    through: datetime | None = None,
    trigger: str = "direct",
) -> ResultSnapshot | None:
    """Compute and store the snapshot of the experiment at the cut-off ``through`` (default:
    now, or when the experiment ended). Idempotent: a run that already produced its snapshot,
    or a cut-off that already has one, returns the stored snapshot. A cut-off that is not a
    look (between two group-sequential looks, or after the final analysis) stores nothing:
    the run's ``note`` says why, and the latest stored snapshot (or None) is returned.

    A live run (no explicit ``through``) then acts: auto-rollback on harm or ill health when
    the experiment opts in, and the ramp plan. A backfill (explicit ``through``) never acts.
    A failure marks the run failed with its error and re-raises; earlier snapshots stay.
    """
    experiment = Experiment.objects.select_related("project").get(pk=experiment_id)
    run = AnalysisRun.objects.filter(pk=run_id, experiment=experiment).first() if run_id else None
    if run is None:
        run = analysis_run_create(
            experiment=experiment, trigger="backfill" if through else trigger, through=through
        )
    done = ResultSnapshot.objects.filter(run=run).first()
    if done is not None:
        _finish(run, RunStatus.SUCCEEDED)
        return done
    now = timezone.now()
    if run.data_through is None:
        run.data_through = through or _default_cutoff(experiment, now)
    run.status = RunStatus.RUNNING
    run.started_at = now
    run.attempts += 1
    run.error = ""
    run.note = ""
    run.save(update_fields=["data_through", "status", "started_at", "attempts", "error", "note"])
    try:
        existing = ResultSnapshot.objects.filter(
            experiment=experiment, phase=experiment.phase, data_through=run.data_through
        ).first()
        snapshot = existing or _compute(experiment, run, live=run.trigger != "backfill")
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:4000]
        _finish(run, RunStatus.FAILED)
        raise
    _finish(run, RunStatus.SUCCEEDED)
    return snapshot


def analysis_backfill(
    *, experiment_id: int, every: timedelta = timedelta(days=1), until: datetime | None = None
) -> list[ResultSnapshot]:
    """Snapshots at phase start + every, + 2 every, ... up to ``until`` (default now), e.g. a
    daily history for a demo. Each is an ordinary, idempotent run with that cut-off."""
    experiment = Experiment.objects.get(pk=experiment_id)
    start = experiment.phase_started_at or experiment.started_at
    if start is None:
        return []
    until = until or _default_cutoff(experiment, timezone.now())
    snapshots: list[ResultSnapshot] = []
    cutoff = start + every
    while cutoff <= until:
        snapshot = analysis_run(experiment_id=experiment_id, through=cutoff)
        if snapshot is not None and snapshot.data_through == cutoff:
            snapshots.append(snapshot)
        cutoff += every
    return snapshots


def _default_cutoff(experiment: Experiment, now: datetime) -> datetime:
    if experiment.ended_at is not None and experiment.ended_at < now:
        return experiment.ended_at
    return now


def _finish(run: AnalysisRun, status: str) -> None:
    run.status = status
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])


# --- reading the database -----------------------------------------------------------------------


@contextmanager
def _consistent_read() -> Iterator[None]:
    """One transaction for the aggregation statements: on PostgreSQL a REPEATABLE READ snapshot
    (with more than METRICS_PER_QUERY metrics, every statement sees the same rows), more
    work_mem for the hash aggregates, and a statement timeout below the task's soft limit."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                work_mem = getattr(settings, "ABACUS_ANALYSIS_WORK_MEM", "256MB")
                timeout_ms = getattr(settings, "ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS", 1_400_000)
                cursor.execute(
                    "SELECT set_config('work_mem', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    [str(work_mem), str(int(timeout_ms))],
                )
        yield


def _metric_spec(em: ExperimentMetric) -> aggregation.MetricSpec:
    m = em.metric
    return aggregation.MetricSpec(
        key=m.key,
        kind=m.kind,
        event_name=m.event_name,
        denominator_event=m.denominator_event,
        window_hours=int(m.conversion_window_hours),
        winsorize_quantile=m.winsorize_quantile,
        cuped=m.cuped,
    )


# --- the computation ----------------------------------------------------------------------------


def _plan(experiment: Experiment, variants: list[Variant], ems: list[ExperimentMetric]) -> Plan:
    control = next(v for v in variants if v.is_control)
    return Plan(
        alpha=experiment.alpha,
        weights={v.key: v.weight for v in variants},
        control=control.key,
        metrics=[
            MetricDef(
                key=em.metric.key,
                kind=em.metric.kind,
                role=em.role,
                direction=em.metric.direction,
                margin=em.non_inferiority_margin,
                cuped=em.metric.cuped,
                name=em.metric.name,
            )
            for em in ems
        ],
        planned=experiment.planned_sample_size,
        policy=experiment.decision_policy,
    )


def _compute(experiment: Experiment, run: AnalysisRun, live: bool) -> ResultSnapshot | None:
    """Aggregate, evaluate and store a snapshot when this cut-off is a look (or the experiment
    is still collecting data); otherwise record why on the run and store nothing."""
    through = run.data_through
    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    variants = list(experiment.variants.all())
    by_pk = {v.pk: v for v in variants}
    ems = list(experiment.experiment_metrics.select_related("metric"))
    with _consistent_read():
        result = aggregation.experiment_aggregates(
            experiment_id=experiment.pk,
            project_id=experiment.project_id,
            metrics=[_metric_spec(em) for em in ems],
            since=since,
            through=through,
        )
    counts, aggregates = result.counts, result.metrics
    errors = dict(getattr(result, "errors", {}) or {})
    plan = _plan(experiment, variants, ems)
    stats = {
        key: {by_pk[pk].key: s for pk, s in agg.stats.items() if pk in by_pk}
        for key, agg in aggregates.items()
    }
    units = {v.key: counts.units_by_variant.get(v.pk, 0) for v in variants}
    previous = (
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=experiment.phase, data_through__lt=through
        )
        .order_by("-data_through", "-id")
        .only("looks")
        .first()
    )
    elapsed_days = max(0.0, (through - since).total_seconds() / 86400)
    past_end = bool(experiment.end_date and through >= experiment.end_date)
    evaluation = evaluate(
        plan,
        stats,
        units,
        dict(previous.looks) if previous else {},
        findings=[*_db_findings(plan, counts, units, stats, errors), _pre_start(experiment, since)],
        errors=errors,
        extensions={
            t: _extension(experiment, plan, t, stats, counts.units, elapsed_days)
            for t in plan.treatments
        },
        past_end=past_end,
        horizon_reason=(
            f"No detectable improvement by the planned end date ({experiment.end_date:%Y-%m-%d})"
            ": stop the experiment."
            if past_end
            else ""
        ),
    )
    status = evaluation.status
    if not status.stored:
        run.note = status.message
        run.save(update_fields=["note"])
        return (
            ResultSnapshot.objects.filter(experiment=experiment, phase=experiment.phase)
            .order_by("-data_through", "-id")
            .first()
        )
    decision = evaluation.decision
    assert decision is not None
    health = _health_json(counts, variants, evaluation.findings, errors)
    rows = []
    for em in ems:
        key = em.metric.key
        caps = aggregates[key].caps if key in aggregates else {}
        rows.append(_row(em, plan.control, stats.get(key, {}).get(plan.control, EMPTY), None, caps))
        for comp in (c for c in evaluation.comparisons if c.metric.key == key):
            t_stats = stats.get(key, {}).get(comp.variant, EMPTY)
            rows.append(_row(em, comp.variant, t_stats, comp, caps, status.kind))

    with transaction.atomic():
        extension = decision.extension if decision.action == "extend" else None
        snapshot = ResultSnapshot.objects.create(
            experiment=experiment,
            run=run,
            computed_at=timezone.now(),
            data_through=through,
            phase=experiment.phase,
            method=plan.method,
            look_kind=status.kind,
            total_units=counts.units,
            health=health,
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
        if live and status.acts:
            actions = _act(experiment, snapshot, evaluation)
            if actions:
                snapshot.actions = actions
                snapshot.save(update_fields=["actions"])
        if live:
            _alert(experiment, snapshot)
    return snapshot


def _db_findings(
    plan: Plan,
    counts: aggregation.ExposureCounts,
    units: dict[str, int],
    stats: dict[str, dict[str, SampleStats]],
    errors: dict[str, str],
) -> list[Finding]:
    """The health checks that need more than the unit counts per arm (SRM is in the policy)."""
    findings = [
        check_no_exposures(counts.units),
        check_multi_exposure(counts.units, counts.multi_variant_units),
        check_empty_arms(dict(units), dict(plan.weights)),
    ]
    for metric in plan.metrics:
        label = metric.name or metric.key
        if metric.key in errors:
            findings.append(
                Finding(
                    "metric_error",
                    "warning",
                    f"'{label}' could not be computed: {errors[metric.key]}. The other metrics "
                    "and the decision go on without it.",
                    None,
                )
            )
            continue
        by_arm = stats.get(metric.key, {})
        sums = {k: (s.n, s.sum) for k, s in by_arm.items()}
        findings.append(check_empty_metric(label, sums))
        if metric.cuped and metric.kind != "ratio":
            for t in plan.treatments:
                findings.append(
                    check_pre_exposure_imbalance(
                        label,
                        t,
                        metric.kind,
                        by_arm.get(plan.control, EMPTY),
                        by_arm.get(t, EMPTY),
                    )
                )
    return findings


def _pre_start(experiment: Experiment, since: datetime) -> Finding:
    """Exposures stamped before the phase start: one count per run (the experiment's exposure
    index, which the aggregation reads anyway), not per dashboard view."""
    from assignments.models import Exposure

    count = Exposure.objects.filter(experiment_id=experiment.pk, ts__lt=since).count()
    return check_pre_start_exposures(count, since)


def _health_json(
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


def _extension(
    experiment: Experiment,
    plan: Plan,
    treatment: str,
    stats: dict[str, dict[str, SampleStats]],
    total: int,
    elapsed_days: float,
) -> Extension | None:
    """The largest extra sample any primary metric of this arm needs."""
    best: Extension | None = None
    for metric in plan.metrics:
        if metric.role != "primary":
            continue
        c_stats = stats.get(metric.key, {}).get(plan.control, EMPTY)
        if c_stats.n < 2 or inconsistency(c_stats, metric.kind):
            continue
        ext = estimate_extension(
            metric=metric.name or metric.key,
            kind=metric.kind,
            control=c_stats,
            variance=arm_estimate(c_stats, metric.kind).variance,
            mde=experiment.mde,
            alpha=2.0 * plan.levels(metric)[0],
            design=plan.method,
            n_arms=len(plan.weights),
            current_units=total,
            elapsed_days=elapsed_days,
            tuning_n=plan.pair_planned(treatment) or DEFAULT_TUNING_N,
            planned_units=plan.planned,
        )
        if ext is not None and (best is None or ext.units > best.units):
            best = ext
    return best


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


def _row(
    em: ExperimentMetric,
    variant: str,
    stats: SampleStats,
    comp: Comparison | None,
    caps: dict[str, float],
    look_kind: str = LOOK,
) -> ResultRow:
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
    return row


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple | dict)


# --- acting on the decision ---------------------------------------------------------------------


def _act(
    experiment: Experiment, snapshot: ResultSnapshot, evaluation: Evaluation
) -> list[dict[str, Any]]:
    """Auto-rollback (opt-in) on harm or ill health; otherwise the ramp plan. Runs inside the
    snapshot's transaction, only at counted looks; the webhook goes out after it commits."""
    experiment.refresh_from_db()
    if experiment.status != ExperimentStatus.RUNNING:
        return []
    decision = evaluation.decision
    assert decision is not None
    now = timezone.now()
    if decision.action == "rollback" and decision.harm and experiment.auto_rollback:
        reason = " ".join(decision.reasons)
        experiment_rollback(experiment=experiment, reason=reason)
        detail = {"trigger": "auto_rollback"}
        return [_notify(experiment, snapshot, "rollback", reason, now, detail)]
    harms = [
        c.outcome
        for c in evaluation.comparisons
        if c.metric.role == "guardrail" and c.outcome.harmed
    ]
    outcome = ramp_step(
        experiment=experiment,
        guardrail_harms=[harm_reason(o) for o in harms],
        unhealthy=evaluation.unhealthy,
        units=snapshot.health.get("units_by_variant", {}),
        now=now,
    )
    if outcome is None:
        return []
    return [_notify(experiment, snapshot, outcome.action, outcome.reason, now, outcome.detail)]


WEBHOOK_EVENTS = {
    "rollback": "experiment.rolled_back",
    "ramp": "experiment.ramped",
    "recommendation": "experiment.recommendation_changed",
    "srm": "experiment.srm_detected",
}


def _alert(experiment: Experiment, snapshot: ResultSnapshot) -> None:
    """Webhooks for what changed since the phase's previous snapshot (live runs only): the
    recommendation (before the first snapshot it counts as "extend": keep collecting), and a
    sample-ratio mismatch that the previous snapshot did not flag."""
    previous = (
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=snapshot.phase, data_through__lt=snapshot.data_through
        )
        .exclude(pk=snapshot.pk)
        .order_by("-data_through", "-id")
        .only("recommendation", "health")
        .first()
    )
    now = timezone.now()
    before = previous.recommendation if previous else "extend"
    if snapshot.recommendation != before:
        reason = f"The recommendation changed from {before} to {snapshot.recommendation}."
        detail = {"previous_recommendation": before}
        _notify(experiment, snapshot, "recommendation", reason, now, detail)
    health = snapshot.health or {}
    if health.get("srm_flagged") and not (previous and (previous.health or {}).get("srm_flagged")):
        units = health.get("units_by_variant", {})
        reason = (
            f"Sample-ratio mismatch (p = {health.get('srm_p_value')}): the units per variant "
            f"{units} do not match the weights; the results cannot be trusted until it is fixed."
        )
        detail = {"srm_p_value": health.get("srm_p_value"), "units_by_variant": units}
        _notify(experiment, snapshot, "srm", reason, now, detail)


def _notify(
    experiment: Experiment,
    snapshot: ResultSnapshot,
    action: str,
    reason: str,
    at: datetime,
    detail: dict[str, Any],
) -> dict[str, Any]:
    record = {"action": action, "at": at.isoformat(), "reason": reason, **detail}
    event = WEBHOOK_EVENTS.get(action)
    if event:
        experiment.refresh_from_db()
        delivery = webhook_enqueue(
            project=experiment.project,
            event=event,
            experiment=experiment,
            snapshot=snapshot,
            payload={
                "experiment": experiment.key,
                "experiment_name": experiment.name,
                "status": experiment.status,
                "coverage": experiment.coverage,
                "at": at.isoformat(),
                "reason": reason,
                "recommendation": snapshot.recommendation,
                "reasons": snapshot.reasons,
                "snapshot_id": snapshot.pk,
                "data_through": snapshot.data_through.isoformat(),
                **detail,
            },
        )
        record["webhook_delivery"] = delivery.pk if delivery else None
    logger.info("experiment %s: %s (%s)", experiment.key, action, reason)
    return record
