"""analysis_run(experiment_id): aggregate in SQL -> statistics -> recommendation -> snapshot, then
act on live runs (auto-rollback, ramp plan, webhook). Also queueing runs and backfills.

Error control (DESIGN.md section 6): primaries are tested at alpha / primaries / treatment arms
(Bonferroni); guardrails at full alpha, one-sided against their margin; secondaries at alpha with
Benjamini-Hochberg adjusted p-values over all secondary comparisons, their intervals rebuilt at
the matching false-coverage-rate level alpha R / m. With a planned sample the decision method is
group-sequential, whose looks are the earlier snapshots of the phase (one counted look per
MIN_LOOK_STEP of information, so a snapshot every few minutes does not make thousands of looks);
otherwise the always-valid confidence sequence.
"""

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analysis import aggregation
from analysis.models import AnalysisRun, ResultRow, ResultSnapshot, RunStatus
from analysis.ramps import ramp_step
from analysis.recommendations import (
    Decision,
    Extension,
    Finding,
    MetricOutcome,
    check_empty_arms,
    check_empty_metric,
    check_multi_exposure,
    check_no_exposures,
    check_pre_exposure_imbalance,
    check_srm,
    decide_arm,
    decide_experiment,
    estimate_extension,
    harm_reason,
    metric_status,
)
from analysis.stats import (
    AnalysisConfig,
    MetricResult,
    SampleStats,
    analyze_metric,
    benjamini_hochberg,
    bonferroni_alpha,
    ci_alpha,
)
from analysis.stats.estimators import arm_estimate
from analysis.webhooks import webhook_enqueue
from experiments.models import Experiment, ExperimentMetric, ExperimentStatus, Variant
from experiments.services import experiment_rollback

logger = logging.getLogger(__name__)
DEFAULT_TUNING_N = 5000
MIN_LOOK_STEP = 0.01  # a snapshot counts as a new group-sequential look per 1% of information
EMPTY = SampleStats(n=0, sum=0.0, sum_sq=0.0)


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
    transaction.on_commit(lambda: run_analysis.delay(experiment.pk, run.pk))
    return run.pk


# --- one run ----------------------------------------------------------------------------------


def analysis_run(
    *,
    experiment_id: int,
    run_id: int | None = None,
    through: datetime | None = None,
    trigger: str = "direct",
) -> ResultSnapshot:
    """Compute and store the snapshot of the experiment at the cut-off ``through`` (default:
    now, or when the experiment ended). Idempotent: a run that already produced its snapshot,
    or a cut-off that already has one, returns the stored snapshot.

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
    run.save(update_fields=["data_through", "status", "started_at", "attempts", "error"])
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
    snapshots = []
    cutoff = start + every
    while cutoff <= until:
        snapshots.append(analysis_run(experiment_id=experiment_id, through=cutoff))
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


@dataclass(frozen=True)
class _Design:
    """What every comparison of this snapshot shares."""

    alpha: float
    method: str  # group_sequential | sequential
    n_primary: int
    n_treatments: int
    planned: int | None
    weights: dict[str, float]
    control_key: str
    previous_looks: dict[str, list[float]]
    policy: str

    def pair_share(self, treatment: str) -> float:
        total = sum(self.weights.values()) or 1.0
        return (self.weights[self.control_key] + self.weights[treatment]) / total

    def pair_planned(self, treatment: str) -> int | None:
        if not self.planned:
            return None
        return max(2, round(self.planned * self.pair_share(treatment)))

    def alpha_for(self, role: str) -> float:
        if role == "primary":
            return bonferroni_alpha(self.alpha, self.n_primary, self.n_treatments)
        return self.alpha

    def config(self, em: ExperimentMetric, treatment: str, alpha: float) -> AnalysisConfig:
        planned = self.pair_planned(treatment)
        margin = None
        # Guardrails, and primaries under "do no harm", are judged on non-inferiority.
        if em.role == "guardrail" or (em.role == "primary" and self.policy == "do_no_harm"):
            margin = em.non_inferiority_margin or 0.0
        elif em.non_inferiority_margin is not None:
            margin = em.non_inferiority_margin
        return AnalysisConfig(
            kind=em.metric.kind,
            alpha=alpha,
            method=self.method,
            tuning_n=planned or DEFAULT_TUNING_N,
            planned_n=planned,
            previous_fractions=tuple(self.previous_looks.get(treatment, ())),
            cuped=em.metric.cuped,
            margin=margin,
            direction=em.metric.direction,
        )


@dataclass
class _Comparison:
    em: ExperimentMetric
    variant: Variant
    stats: SampleStats
    result: MetricResult
    alpha: float
    config: AnalysisConfig
    adjusted_p: float | None = None


def _compute(experiment: Experiment, run: AnalysisRun, live: bool) -> ResultSnapshot:
    through = run.data_through
    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    variants = list(experiment.variants.all())
    control = next(v for v in variants if v.is_control)
    treatments = [v for v in variants if not v.is_control]
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
    previous = (
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=experiment.phase, data_through__lt=through
        )
        .order_by("-data_through", "-id")
        .only("looks")
        .first()
    )
    design = _Design(
        alpha=experiment.alpha,
        method="group_sequential" if experiment.planned_sample_size else "sequential",
        n_primary=sum(1 for em in ems if em.role == "primary"),
        n_treatments=len(treatments),
        planned=experiment.planned_sample_size,
        weights={v.key: v.weight for v in variants},
        control_key=control.key,
        previous_looks=dict(previous.looks) if previous else {},
        policy=experiment.decision_policy,
    )

    def stats_of(em: ExperimentMetric, variant: Variant) -> SampleStats:
        return aggregates[em.metric.key].stats.get(variant.pk, EMPTY)

    comparisons = _compare(ems, control, treatments, stats_of, design)
    findings = _health(counts, variants, control, treatments, ems, stats_of)
    unhealthy = [f.message for f in findings if f.unhealthy]
    total = counts.units
    elapsed_days = max(0.0, (through - since).total_seconds() / 86400)
    past_horizon = bool(
        (experiment.planned_sample_size and total >= experiment.planned_sample_size)
        or (experiment.end_date and through >= experiment.end_date)
    )
    horizon_reason = _horizon_reason(experiment, total, through)
    arms: dict[str, Decision] = {}
    for t in treatments:
        mine = [c for c in comparisons if c.variant.pk == t.pk]
        extension = _extension(experiment, mine, control, stats_of, design, total, elapsed_days)
        arms[t.key] = decide_arm(
            [_outcome(c) for c in mine],
            unhealthy_reasons=unhealthy,
            policy=experiment.decision_policy,
            past_horizon=past_horizon,
            extension=extension,
            horizon_reason=horizon_reason,
        )
    decision = decide_experiment(arms)
    health = _health_json(counts, variants, findings)
    looks = _looks(comparisons, design)

    rows = []
    for em in ems:
        c_stats = stats_of(em, control)
        rows.append(_row(em, control, c_stats, None, aggregates[em.metric.key].caps))
        for comp in (c for c in comparisons if c.em.pk == em.pk):
            rows.append(_row(em, comp.variant, comp.stats, comp, aggregates[em.metric.key].caps))

    with transaction.atomic():
        extension = decision.extension if decision.action == "extend" else None
        snapshot = ResultSnapshot.objects.create(
            experiment=experiment,
            run=run,
            computed_at=timezone.now(),
            data_through=through,
            phase=experiment.phase,
            method=design.method,
            total_units=total,
            health=health,
            recommendation=decision.action,
            reasons=decision.reasons,
            arms=[_arm_json(k, d) for k, d in arms.items()],
            ship_variant=decision.variant if decision.action == "keep" else "",
            extra_units=extension.units if extension else None,
            extra_days=_finite(extension.days) if extension else None,
            looks=looks,
        )
        for row in rows:
            row.snapshot = snapshot
        ResultRow.objects.bulk_create(rows)
        if live:
            actions = _act(experiment, snapshot, decision, comparisons, unhealthy)
            if actions:
                snapshot.actions = actions
                snapshot.save(update_fields=["actions"])
    return snapshot


def _compare(
    ems: list[ExperimentMetric],
    control: Variant,
    treatments: list[Variant],
    stats_of: Any,
    design: _Design,
) -> list[_Comparison]:
    """Every (metric, treatment arm) against control, secondaries BH-adjusted."""
    out: list[_Comparison] = []
    for em in ems:
        alpha = design.alpha_for(em.role)
        c_stats = stats_of(em, control)
        for t in treatments:
            t_stats = stats_of(em, t)
            config = design.config(em, t.key, alpha)
            result = analyze_metric(c_stats, t_stats, config)
            out.append(_Comparison(em, t, t_stats, result, alpha, config))
    secondaries = [c for c in out if c.em.role == "secondary"]
    if secondaries:
        adjusted = benjamini_hochberg([c.result.p_value for c in secondaries])
        rejected = sum(1 for q in adjusted if q is not None and q < design.alpha)
        level = ci_alpha("benjamini_hochberg", design.alpha, len(secondaries), rejected)
        for comp, q in zip(secondaries, adjusted, strict=True):
            comp.adjusted_p = q
            if not math.isclose(level, comp.alpha):
                # The intervals at the false-coverage-rate level; the p-values stay those of
                # the test at alpha that the adjustment was computed from.
                first = comp.result
                rebuilt = analyze_metric(
                    stats_of(comp.em, control),
                    comp.stats,
                    design.config(comp.em, comp.variant.key, level),
                )
                comp.result = replace(
                    rebuilt,
                    p_value=first.p_value,
                    fixed_p_value=first.fixed_p_value,
                    cs_p_value=first.cs_p_value,
                )
                comp.alpha = level
            significant = q is not None and q < design.alpha
            comp.result = replace(
                comp.result,
                significant=significant,
                improved=significant and comp.result.improved,
                harmed=significant and comp.result.harmed,
            )
    return out


def _outcome(c: _Comparison) -> MetricOutcome:
    r = c.result
    return MetricOutcome(
        metric=c.em.metric.key,
        role=c.em.role,
        variant=c.variant.key,
        lift_rel=r.lift_rel,
        ci_low=r.ci_low,
        ci_high=r.ci_high,
        improved=r.improved,
        harmed=r.harmed,
        non_inferior=r.non_inferior,
        name=c.em.metric.name,
        direction=c.em.metric.direction,
        margin=None if r.non_inferior is None else _margin(c),
        alpha=c.alpha,
    )


def _margin(c: _Comparison) -> float:
    return float(c.em.non_inferiority_margin or 0.0)


def _health(
    counts: aggregation.ExposureCounts,
    variants: list[Variant],
    control: Variant,
    treatments: list[Variant],
    ems: list[ExperimentMetric],
    stats_of: Any,
) -> list[Finding]:
    observed = {v.key: counts.units_by_variant.get(v.pk, 0) for v in variants}
    findings = [
        check_no_exposures(counts.units),
        check_srm([observed[v.key] for v in variants], [v.weight for v in variants]),
        check_multi_exposure(counts.units, counts.multi_variant_units),
        check_empty_arms(observed, {v.key: v.weight for v in variants}),
    ]
    for em in ems:
        sums = {v.key: (stats_of(em, v).n, stats_of(em, v).sum) for v in variants}
        findings.append(check_empty_metric(em.metric.name or em.metric.key, sums))
        if em.metric.cuped and em.metric.kind != "ratio":
            for t in treatments:
                findings.append(
                    check_pre_exposure_imbalance(
                        em.metric.name or em.metric.key,
                        t.key,
                        em.metric.kind,
                        stats_of(em, control),
                        stats_of(em, t),
                    )
                )
    return findings


def _health_json(
    counts: aggregation.ExposureCounts, variants: list[Variant], findings: list[Finding]
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
    }


def _extension(
    experiment: Experiment,
    comparisons: list[_Comparison],
    control: Variant,
    stats_of: Any,
    design: _Design,
    total: int,
    elapsed_days: float,
) -> Extension | None:
    """The largest extra sample any primary metric of this arm needs."""
    best: Extension | None = None
    for c in comparisons:
        if c.em.role != "primary":
            continue
        kind = c.em.metric.kind
        c_stats = stats_of(c.em, control)
        if c_stats.n < 2:
            continue
        variance = arm_estimate(c_stats, kind).variance
        ext = estimate_extension(
            metric=c.em.metric.name or c.em.metric.key,
            kind=kind,
            control=c_stats,
            variance=variance,
            mde=experiment.mde,
            alpha=c.alpha,
            design=design.method,
            n_arms=len(design.weights),
            current_units=total,
            elapsed_days=elapsed_days,
            tuning_n=design.pair_planned(c.variant.key) or DEFAULT_TUNING_N,
            planned_units=design.planned,
        )
        if ext is not None and (best is None or ext.units > best.units):
            best = ext
    return best


def _horizon_reason(experiment: Experiment, total: int, through: datetime) -> str:
    if experiment.planned_sample_size and total >= experiment.planned_sample_size:
        return (
            f"No detectable improvement after the planned sample of "
            f"{experiment.planned_sample_size:,} units ({total:,} so far): stop the experiment."
        )
    if experiment.end_date and through >= experiment.end_date:
        return (
            f"No detectable improvement by the planned end date "
            f"({experiment.end_date:%Y-%m-%d}): stop the experiment."
        )
    return ""


def _looks(comparisons: list[_Comparison], design: _Design) -> dict[str, list[float]]:
    """The counted group-sequential looks per arm, including this one when it adds at least
    MIN_LOOK_STEP of information over the last counted look."""
    if design.method != "group_sequential":
        return {}
    looks: dict[str, list[float]] = {}
    for c in comparisons:
        key = c.variant.key
        if key in looks:
            continue
        earlier = [float(x) for x in design.previous_looks.get(key, [])]
        fraction = c.result.information_fraction
        if fraction is not None and fraction > 0:
            last = earlier[-1] if earlier else 0.0
            if fraction >= last + MIN_LOOK_STEP or (fraction >= 1 > last):
                earlier.append(round(float(fraction), 6))
        looks[key] = earlier
    return looks


def _arm_json(key: str, d: Decision) -> dict[str, Any]:
    return {
        "variant": key,
        "action": d.action,
        "reasons": d.reasons,
        "harm": d.harm,
        "extra_units": d.extension.units if d.extension else None,
        "extra_days": _finite(d.extension.days) if d.extension else None,
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _row(
    em: ExperimentMetric,
    variant: Variant,
    stats: SampleStats,
    comp: _Comparison | None,
    caps: dict[str, float],
) -> ResultRow:
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
        row.alpha = comp.alpha
        row.information_fraction = result.information_fraction
        row.method = result.method
        row.significant = result.significant
        row.status = metric_status(_outcome(comp))
        row.details.update({k: v for k, v in asdict(result).items() if _jsonable(v)})
        # How the comparison was set up, so exports can re-derive it without the pipeline's rules.
        config = comp.config
        row.details.update(
            margin=config.margin,
            tuning_n=config.tuning_n,
            planned_n=config.planned_n,
            previous_fractions=list(config.previous_fractions),
        )
    return row


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple | dict)


# --- acting on the decision ---------------------------------------------------------------------


def _act(
    experiment: Experiment,
    snapshot: ResultSnapshot,
    decision: Decision,
    comparisons: list[_Comparison],
    unhealthy: list[str],
) -> list[dict[str, Any]]:
    """Auto-rollback (opt-in) on harm or ill health; otherwise the ramp plan. Runs inside the
    snapshot's transaction; the webhook goes out after it commits."""
    experiment.refresh_from_db()
    if experiment.status != ExperimentStatus.RUNNING:
        return []
    now = timezone.now()
    if decision.action == "rollback" and decision.harm and experiment.auto_rollback:
        reason = " ".join(decision.reasons)
        experiment_rollback(experiment=experiment, reason=reason)
        detail = {"trigger": "auto_rollback"}
        return [_notify(experiment, snapshot, "rollback", reason, now, detail)]
    harms = [o for o in map(_outcome, comparisons) if o.role == "guardrail" and o.harmed]
    outcome = ramp_step(
        experiment=experiment,
        guardrail_harms=[harm_reason(o) for o in harms],
        unhealthy=unhealthy,
        now=now,
    )
    if outcome is None:
        return []
    return [_notify(experiment, snapshot, outcome.action, outcome.reason, now, outcome.detail)]


WEBHOOK_EVENTS = {"rollback": "experiment.rolled_back", "ramp": "experiment.ramped"}


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
