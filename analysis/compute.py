"""Read one cut-off from the database and ask the decision policy about it.

``evaluate_cutoff`` aggregates the experiment's exposures and events in SQL (one consistent
read), builds the plan, the health findings that need the database and each arm's extension
estimate, and calls ``analysis.policy.evaluate`` (pure). It stores nothing: analysis.persist
turns the result into a snapshot and its rows.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connections, transaction

from analysis import aggregation, incremental, incremental_read
from analysis.models import ResultSnapshot
from analysis.policy import DEFAULT_TUNING_N, EMPTY, Evaluation, MetricDef, Plan, evaluate
from analysis.recommendations import (
    Extension,
    Finding,
    check_empty_arms,
    check_empty_metric,
    check_multi_exposure,
    check_no_exposures,
    check_pre_exposure_imbalance,
    check_pre_start_exposures,
    estimate_extension,
)
from core.replica import analysis_reads
from experiments.filters import clean_filters
from experiments.models import Experiment, ExperimentMetric, Metric, Variant
from stats import SampleStats
from stats.analyze import inconsistency
from stats.estimators import arm_estimate


@dataclass(frozen=True)
class CutoffEvaluation:
    """What one cut-off read from the database and what the policy made of it."""

    through: datetime
    variants: list[Variant]
    ems: list[ExperimentMetric]
    plan: Plan
    counts: aggregation.ExposureCounts
    aggregates: dict[str, aggregation.MetricAggregate]
    stats: dict[str, dict[str, SampleStats]]  # metric key -> variant key -> stats
    errors: dict[str, str]  # metric key -> why it could not be computed
    evaluation: Evaluation


def evaluate_cutoff(
    experiment: Experiment, through: datetime, live: bool = False
) -> CutoffEvaluation:
    """Aggregate the phase's data up to ``through`` and evaluate it against the plan. A
    ``live`` run (its cut-off moves forward) reads the stored per-unit aggregates, brought up
    to date first (analysis.incremental); a backfill runs the full statement."""
    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    variants = list(experiment.variants.all())
    by_pk = {v.pk: v for v in variants}
    ems = list(experiment.experiment_metrics.select_related("metric"))
    window = {
        "experiment_id": experiment.pk,
        "project_id": experiment.project_id,
        "metrics": [_metric_spec(em) for em in ems],
        "since": since,
        "through": through,
    }
    stored = live and incremental.refresh(**window)
    with _consistent_read():
        aggregate = (
            incremental_read.experiment_aggregates if stored else aggregation.experiment_aggregates
        )
        result = aggregate(**window)
    counts, aggregates = result.counts, result.metrics
    errors = dict(getattr(result, "errors", {}) or {})
    plan = _plan(experiment, variants, ems)
    stats = {
        key: {by_pk[pk].key: s for pk, s in agg.stats.items() if pk in by_pk}
        for key, agg in aggregates.items()
    }
    units = {v.key: counts.units_by_variant.get(v.pk, 0) for v in variants}
    looks = _previous_looks(experiment, through)
    elapsed_days = max(0.0, (through - since).total_seconds() / 86400)
    past_end = bool(experiment.end_date and through >= experiment.end_date)
    evaluation = evaluate(
        plan,
        stats,
        units,
        looks,
        findings=[
            *_db_findings(plan, counts, units, stats, errors),
            _pre_start(experiment, since, stored),
        ],
        errors=errors,
        extensions={
            t: _extension(experiment, plan, t, stats, counts.units, elapsed_days)
            for t in plan.treatments
        },
        past_end=past_end,
        horizon_reason=_horizon_reason(experiment, past_end),
    )
    return CutoffEvaluation(
        through, variants, ems, plan, counts, aggregates, stats, errors, evaluation
    )


# --- reading the database -----------------------------------------------------------------------


@contextmanager
def _consistent_read() -> Iterator[None]:
    """One transaction for the aggregation statements: on PostgreSQL a REPEATABLE READ snapshot
    (with more than METRICS_PER_QUERY metrics, every statement sees the same rows), more
    work_mem for the hash aggregates, and a statement timeout below the task's soft limit. On
    the read replica when one is configured and has replayed what the primary had committed
    (core.replica: the snapshot then equals the primary's)."""
    with analysis_reads() as alias:
        connection = connections[alias]
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=alias):
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    if outermost:
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    work_mem = getattr(settings, "ABACUS_ANALYSIS_WORK_MEM", "256MB")
                    timeout_ms = getattr(
                        settings, "ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS", 1_400_000
                    )
                    cursor.execute(
                        "SELECT set_config('work_mem', %s, true), "
                        "set_config('statement_timeout', %s, true)",
                        [str(work_mem), str(int(timeout_ms))],
                    )
            yield


def _metric_spec(em: ExperimentMetric) -> aggregation.MetricSpec:
    return metric_spec(em.metric)


def metric_spec(m: Metric) -> aggregation.MetricSpec:
    """A catalog metric as the aggregation reads it (also the holdouts' comparison's)."""
    return aggregation.MetricSpec(
        key=m.key,
        kind=m.kind,
        event_name=m.event_name,
        denominator_event=m.denominator_event,
        window_hours=int(m.conversion_window_hours),
        winsorize_quantile=m.winsorize_quantile,
        cuped=m.cuped,
        filters=tuple(clean_filters(m.filters)),
        value_property=m.value_property,
    )


def _previous_looks(experiment: Experiment, through: datetime) -> dict[str, list[float]]:
    """The looks counted by the phase's latest snapshot before this cut-off."""
    previous = (
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=experiment.phase, data_through__lt=through
        )
        .order_by("-data_through", "-id")
        .only("looks")
        .first()
    )
    return dict(previous.looks) if previous else {}


def _pre_start(experiment: Experiment, since: datetime, stored: bool) -> Finding:
    """Exposures stamped before the phase start: one count per run, not per dashboard view;
    with ``stored`` rows (a live run), the count kept with them plus the exposures since
    (analysis.incremental_read), else a count of the experiment's exposures."""
    from assignments.models import Exposure

    count = None
    if stored:
        count = incremental_read.pre_start_exposures(
            experiment_id=experiment.pk, project_id=experiment.project_id, since=since
        )
    if count is None:
        count = Exposure.objects.filter(
            project_id=experiment.project_id, experiment_id=experiment.pk, ts__lt=since
        ).count()
    return check_pre_start_exposures(count, since)


# --- what the policy is given -------------------------------------------------------------------


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


def _horizon_reason(experiment: Experiment, past_end: bool) -> str:
    if not past_end:
        return ""
    return (
        f"No detectable improvement by the planned end date ({experiment.end_date:%Y-%m-%d})"
        ": stop the experiment."
    )


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
