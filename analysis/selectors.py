"""Reads of analysis results: snapshots in the API shape, the dashboard view of them, exports."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from analysis.models import AnalysisRun, ResultRow, ResultSnapshot, RunStatus
from experiments.models import Experiment, ExperimentMetric, ExperimentStatus, Project
from stats import days_remaining

ROLE_ORDER = ("primary", "guardrail", "secondary")
ROLE_LABELS = {"primary": "Primary", "guardrail": "Guardrails", "secondary": "Secondary"}
HISTORY_MAX_POINTS = 240


def snapshots_for(experiment: Experiment) -> QuerySet[ResultSnapshot]:
    return ResultSnapshot.objects.filter(experiment=experiment).prefetch_related(
        Prefetch("rows", queryset=ResultRow.objects.order_by("id"))
    )


# Snapshots form a time series by their data cut-off: a backfill computes past cut-offs later.
LATEST_FIRST = ("-data_through", "-computed_at", "-id")


def latest_snapshot(experiment: Experiment) -> ResultSnapshot | None:
    return snapshots_for(experiment).order_by(*LATEST_FIRST).first()


def latest_run(experiment: Experiment) -> AnalysisRun | None:
    return AnalysisRun.objects.filter(experiment=experiment).order_by("-created_at", "-id").first()


def row_json(row: ResultRow, control: ResultRow | None) -> dict[str, Any]:
    details = row.details or {}
    return {
        "metric": row.metric_key,
        "kind": row.metric_kind,
        "role": row.role,
        "variant": row.variant,
        "control_n": control.n if control else None,
        "variant_n": row.n,
        "control_mean": control.mean if control else None,
        "variant_mean": row.mean,
        "lift_abs": row.lift_abs,
        "lift_rel": row.lift_rel,
        "ci_low": row.ci_low,
        "ci_high": row.ci_high,
        "p_value": row.p_value,
        "fixed_p_value": row.fixed_p_value,
        "adjusted_p_value": getattr(row, "adjusted_p_value", None),
        "alpha": getattr(row, "alpha", None),
        "method": row.method,
        "significant": row.significant,
        "status": row.status,
        # the margin this comparison was judged against, as the pipeline stored it
        "margin": details.get("margin"),
        "details": details,
    }


def snapshot_json(snapshot: ResultSnapshot) -> dict[str, Any]:
    rows = list(snapshot.rows.all())
    controls = {r.metric_key: r for r in rows if r.is_control}
    return {
        "experiment": snapshot.experiment.key,
        "snapshot_id": snapshot.pk,
        "computed_at": snapshot.computed_at.isoformat(),
        "data_through": snapshot.data_through.isoformat(),
        "phase": snapshot.phase,
        "method": snapshot.method,
        "look_kind": snapshot.look_kind,
        "total_units": snapshot.total_units,
        "metrics": [row_json(r, controls.get(r.metric_key)) for r in rows if not r.is_control],
        "arms": snapshot.arms,
        "health": snapshot.health,
        "recommendation": {
            "action": snapshot.recommendation,
            "cause": snapshot.cause,
            "reasons": snapshot.reasons,
            "ship_variant": getattr(snapshot, "ship_variant", "") or None,
            "extra_units": getattr(snapshot, "extra_units", None),
            "extra_days": getattr(snapshot, "extra_days", None),
        },
        "actions": getattr(snapshot, "actions", None) or [],
    }


# --- the dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricBlock:
    """One metric of the latest snapshot with its definition and one row per treatment arm."""

    key: str
    name: str
    kind: str
    role: str
    direction: str
    margin: float | None
    cuped: bool
    control_n: int | None
    control_mean: float | None
    arms: list[dict[str, Any]]


@dataclass(frozen=True)
class RoleGroup:
    role: str
    label: str
    metrics: list[MetricBlock]


def metric_groups(experiment: Experiment, results: dict[str, Any]) -> list[RoleGroup]:
    """The snapshot's metrics grouped primary, guardrails, secondary, in the experiment's order."""
    definitions = {em.metric.key: em for em in experiment.experiment_metrics.all()}
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for row in results["metrics"]:
        by_metric.setdefault(row["metric"], []).append(row)
    order = list(definitions) + [k for k in by_metric if k not in definitions]
    groups = []
    for role in ROLE_ORDER + tuple(
        sorted({r[0]["role"] for r in by_metric.values()} - set(ROLE_ORDER))
    ):
        blocks = []
        for key in order:
            rows = by_metric.get(key)
            if not rows or rows[0]["role"] != role:
                continue
            em = definitions.get(key)
            # the margin the analysis judged non-inferiority against, as it stored it
            margin = next((r["margin"] for r in rows if r.get("margin") is not None), None)
            blocks.append(
                MetricBlock(
                    key=key,
                    name=em.metric.name if em else key,
                    kind=rows[0]["kind"],
                    role=role,
                    direction=em.metric.direction if em else "increase",
                    margin=margin,
                    cuped=em.metric.cuped if em else False,
                    control_n=rows[0]["control_n"],
                    control_mean=rows[0]["control_mean"],
                    arms=rows,
                )
            )
        if blocks:
            groups.append(RoleGroup(role, ROLE_LABELS.get(role, role.capitalize()), blocks))
    return groups


@dataclass(frozen=True)
class Progress:
    """How far the experiment is toward its planned sample, and how long the rest may take."""

    units: int
    planned: int | None
    fraction: float | None
    units_left: int | None
    days_left: float | None
    elapsed_days: float | None
    units_per_day: float | None
    expected_end: datetime | None


def experiment_progress(experiment: Experiment, snapshot: ResultSnapshot | None) -> Progress:
    """Units so far against the planned sample, with days left at the traffic seen so far."""
    units = snapshot.total_units if snapshot else 0
    planned = experiment.planned_sample_size
    start = experiment.phase_started_at or experiment.started_at
    elapsed = None
    if start and snapshot:
        elapsed = max(0.0, (snapshot.data_through - start).total_seconds() / 86400)
    rate = units / elapsed if elapsed and units else None
    if not planned:
        return Progress(units, None, None, None, None, elapsed, rate, None)
    remaining = days_remaining(
        current_units=units, required_units=planned, elapsed_days=elapsed or 0.0
    )
    end = None
    if remaining.days is not None and snapshot:
        end = snapshot.data_through + timedelta(days=remaining.days)
    return Progress(
        units=units,
        planned=planned,
        fraction=min(1.0, units / planned),
        units_left=remaining.units,
        days_left=remaining.days,
        elapsed_days=elapsed,
        units_per_day=rate,
        expected_end=end,
    )


@dataclass(frozen=True)
class Finding:
    """A health problem the page must not hide: what is wrong and what to check."""

    kind: str  # a health check (srm, multi_exposure, no_exposures, ...), stale, run_failed
    level: str  # error (the numbers are not to be trusted) | warning
    title: str
    message: str
    checks: list[str] = field(default_factory=list)


_CHECKS = {
    "srm": [
        "Is the exposure event logged the same way in every variant (same page, same moment)?",
        "Do redirects, caching or bots drop units from one variant only?",
        "Was the split or targeting changed while the experiment ran?",
    ],
    "multi_exposure": [
        "Is the unit id the same one the assignment used (hash attribute)?",
        "Does the service cache a variant across users, or log exposures before assigning?",
    ],
    "no_exposures": [
        "Does your service post exposure events to /api/v1/events with this experiment's key?",
        "Is the experiment running, and do its targeting and coverage let units in?",
    ],
    "empty_arm": [
        "Does the variant fail (error page, crash) before it logs its exposure or the event?",
        "Is the event name the same in the variant's code as in the metric definition?",
    ],
    "pre_exposure_imbalance": [
        "Did units enter the experiment at different times or through different paths per arm?",
        "Is the bucketing attribute stable for a unit (not a session or request id)?",
    ],
    "stale": [
        "Is the Celery worker running (and beat, which schedules the refresh)?",
        "Press Refresh to queue an analysis now.",
    ],
    "run_failed": ["Read the error below; the worker log has the full traceback."],
    "pre_start_exposures": [
        "Are the clients' clocks right? Events carry the client's timestamp.",
        "Does a client replay old events (a queue drained after an outage, a backfill)?",
        "Was the experiment restarted or its targeting changed (a new phase) while clients "
        "still sent the earlier phase's events?",
    ],
    "metric_error": [
        "Is an event value absurdly large? Delete or exclude it (docs/operations.md, "
        "'Removing bad events'); new events are bounded at ingestion.",
        "Does a ratio metric's denominator event reach the control arm at all?",
    ],
}
_TITLES = {
    "srm": "Sample ratio mismatch",
    "multi_exposure": "Units exposed to more than one variant",
    "no_exposures": "No data yet",
    "empty_arm": "A variant is missing data",
    "pre_exposure_imbalance": "Arms differed before exposure",
    "metric_error": "A metric could not be computed",
    "pre_start_exposures": "Exposures before the phase start are not counted",
}


def _classify(warning: str) -> str:
    """The check behind a free-text warning (snapshots that store only their messages)."""
    text = warning.lower()
    if "sample ratio" in text:
        return "srm"
    if "more than one variant" in text:
        return "multi_exposure"
    if "no exposures" in text:
        return "no_exposures"
    if "no units reached" in text or "no events at all" in text:
        return "empty_arm"
    if "before exposure" in text:
        return "pre_exposure_imbalance"
    return "other"


def _snapshot_findings(health: dict[str, Any]) -> list[Finding]:
    findings = []
    structured = health.get("findings")
    if isinstance(structured, list) and structured:
        # {"check", "severity": ok | info | warning | unhealthy, "message", "value"}
        for f in structured:
            severity = f.get("severity")
            if severity not in ("warning", "unhealthy"):
                continue
            kind = f.get("check") or "other"
            findings.append(
                Finding(
                    kind,
                    "error" if severity == "unhealthy" else "warning",
                    _TITLES.get(kind, "Check the data"),
                    f.get("message", ""),
                    _CHECKS.get(kind, []),
                )
            )
        return findings
    unhealthy = health.get("healthy") is False
    for warning in health.get("warnings", []):
        kind = _classify(warning)
        level = (
            "error" if unhealthy and kind in ("srm", "multi_exposure", "empty_arm") else "warning"
        )
        findings.append(
            Finding(
                kind, level, _TITLES.get(kind, "Check the data"), warning, _CHECKS.get(kind, [])
            )
        )
    if health.get("srm_flagged") and not any(f.kind == "srm" for f in findings):
        findings.append(
            Finding(
                "srm",
                "error",
                _TITLES["srm"],
                f"The split of units differs from the configured weights "
                f"(p = {health.get('srm_p_value', 0):.2g}).",
                _CHECKS["srm"],
            )
        )
    return findings


def health_findings(
    experiment: Experiment,
    snapshot: ResultSnapshot | None,
    last_run: AnalysisRun | None,
    now: datetime | None = None,
) -> list[Finding]:
    """The snapshot's health problems with what to check, plus a stale or failed analysis;
    errors (the numbers cannot be trusted) first."""
    now = now or timezone.now()
    findings: list[Finding] = []
    if snapshot is not None:
        findings += _snapshot_findings(snapshot.health or {})
        if experiment.status == ExperimentStatus.RUNNING:
            age = (now - snapshot.computed_at).total_seconds()
            interval = float(getattr(settings, "ABACUS_ANALYSIS_INTERVAL", 300))
            if age > max(3 * interval, 900):
                findings.append(
                    Finding(
                        "stale",
                        "warning",
                        "Results are out of date",
                        f"The latest snapshot is {_age(age)} old, although the experiment is "
                        f"running and is analysed every {_age(interval)}.",
                        _CHECKS["stale"],
                    )
                )
    if last_run is not None and last_run.status == RunStatus.FAILED:
        findings.append(
            Finding(
                "run_failed",
                "error",
                "The last analysis failed",
                last_run.error or "No error message was recorded.",
                _CHECKS["run_failed"],
            )
        )
    return sorted(findings, key=lambda f: f.level != "error")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def snapshot_history(
    experiment: Experiment, *, phase: int, max_points: int = HISTORY_MAX_POINTS
) -> list[dict[str, Any]]:
    """The phase's snapshots over time, thinned to ``max_points`` evenly spaced ones (the
    latest always kept): units per variant and, per metric and arm, lift with both intervals."""
    order = ("data_through", "computed_at", "id")
    phase_snapshots = ResultSnapshot.objects.filter(experiment=experiment, phase=phase)
    ids = list(phase_snapshots.order_by(*order).values_list("id", flat=True))
    if len(ids) > max_points:  # thin on ids first: health is loaded for the chosen points only
        step = (len(ids) - 1) / (max_points - 1)
        ids = [ids[round(i * step)] for i in range(max_points)]
    snaps = (
        phase_snapshots.filter(id__in=ids)
        .order_by(*order)
        .values("id", "computed_at", "data_through", "total_units", "health", "look_kind")
    )
    points = {
        s["id"]: {
            "snapshot_id": s["id"],
            "computed_at": s["computed_at"].isoformat(),
            "data_through": s["data_through"].isoformat(),
            "total_units": s["total_units"],
            "look_kind": s["look_kind"],
            "units_by_variant": (s["health"] or {}).get("units_by_variant", {}),
            "metrics": {},
        }
        for s in snaps
    }
    rows = ResultRow.objects.filter(snapshot_id__in=list(points), is_control=False).values(
        "snapshot_id", "metric_key", "variant", "lift_rel", "ci_low", "ci_high", "details"
    )
    for r in rows:
        details = r["details"] or {}
        points[r["snapshot_id"]]["metrics"].setdefault(r["metric_key"], {})[r["variant"]] = {
            "lift_rel": r["lift_rel"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "cs_ci_low": details.get("cs_ci_low", r["ci_low"]),
            "cs_ci_high": details.get("cs_ci_high", r["ci_high"]),
        }
    return list(points.values())


# --- the overview across experiments ------------------------------------------------------------


@dataclass(frozen=True)
class OverviewRow:
    experiment: Experiment
    snapshot: ResultSnapshot | None
    days_running: float | None
    primary: list[dict[str, Any]]  # per (primary metric, treatment arm): lift and interval


def _latest_snapshot_subquery(field_name: str) -> Subquery:
    return Subquery(
        ResultSnapshot.objects.filter(experiment=OuterRef("pk"))
        .order_by(*LATEST_FIRST)
        .values(field_name)[:1]
    )


def experiments_overview(
    project: Project,
    *,
    statuses: Iterable[str] = (),
    recommendations: Iterable[str] = (),
    now: datetime | None = None,
) -> list[OverviewRow]:
    """Every experiment of the project with its latest recommendation and primary lift, filtered
    by status and by recommendation ("none" = no snapshot yet). Three queries in all."""
    now = now or timezone.now()
    experiments = (
        Experiment.objects.filter(project=project)
        .annotate(
            latest_snapshot_id=_latest_snapshot_subquery("pk"),
            latest_recommendation=_latest_snapshot_subquery("recommendation"),
        )
        .order_by("-started_at", "-created_at")
    )
    statuses, recommendations = list(statuses), list(recommendations)
    if statuses:
        experiments = experiments.filter(status__in=statuses)
    if recommendations:
        condition = Q(latest_recommendation__in=[r for r in recommendations if r != "none"])
        if "none" in recommendations:
            condition |= Q(latest_snapshot_id__isnull=True)
        experiments = experiments.filter(condition)
    experiments = list(experiments)
    ids = [e.latest_snapshot_id for e in experiments if e.latest_snapshot_id]
    snapshots = ResultSnapshot.objects.in_bulk(ids)
    primary: dict[int, list[dict[str, Any]]] = {}
    for r in ResultRow.objects.filter(
        snapshot_id__in=ids, role="primary", is_control=False
    ).order_by("id"):
        primary.setdefault(r.snapshot_id, []).append(
            {
                "metric": r.metric_key,
                "variant": r.variant,
                "lift_rel": r.lift_rel,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "status": r.status,
            }
        )
    out = []
    for e in experiments:
        days = None
        if e.started_at:
            days = max(0.0, ((e.ended_at or now) - e.started_at).total_seconds() / 86400)
        out.append(
            OverviewRow(
                experiment=e,
                snapshot=snapshots.get(e.latest_snapshot_id),
                days_running=days,
                primary=primary.get(e.latest_snapshot_id, []),
            )
        )
    return out


# --- exports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilter:
    """Which snapshots of a project go into an export; empty tuples mean "all"."""

    project: Project
    experiments: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None  # snapshot data_through >= since
    until: datetime | None = None  # snapshot data_through < until
    latest_only: bool = False


@dataclass
class SnapshotRows:
    """One snapshot with its rows and the metric definitions that describe them."""

    snapshot: ResultSnapshot
    rows: list[ResultRow]
    definitions: dict[int, ExperimentMetric]  # by metric id


def export_snapshot_queryset(flt: ExportFilter) -> QuerySet[ResultSnapshot]:
    snapshots = ResultSnapshot.objects.filter(experiment__project=flt.project)
    if flt.experiments:
        snapshots = snapshots.filter(experiment__key__in=flt.experiments)
    if flt.statuses:
        snapshots = snapshots.filter(experiment__status__in=flt.statuses)
    if flt.since:
        snapshots = snapshots.filter(data_through__gte=flt.since)
    if flt.until:
        snapshots = snapshots.filter(data_through__lt=flt.until)
    if flt.latest_only:
        latest = Experiment.objects.filter(project=flt.project).annotate(
            latest_snapshot_id=_latest_snapshot_subquery("pk")
        )
        snapshots = snapshots.filter(pk__in=latest.values("latest_snapshot_id"))
    return snapshots


def export_row_count(flt: ExportFilter) -> int:
    return ResultRow.objects.filter(snapshot__in=export_snapshot_queryset(flt)).count()


def export_snapshots(flt: ExportFilter, *, chunk_size: int = 2000) -> Iterator[SnapshotRows]:
    """The filtered snapshots in (experiment, time) order, one at a time, streaming their rows
    from the database in chunks so memory stays flat in the size of the export."""
    definitions: dict[int, dict[int, ExperimentMetric]] = {}
    for em in ExperimentMetric.objects.filter(experiment__project=flt.project).select_related(
        "metric"
    ):
        definitions.setdefault(em.experiment_id, {})[em.metric_id] = em
    rows = (
        ResultRow.objects.filter(snapshot__in=export_snapshot_queryset(flt))
        .select_related("snapshot", "snapshot__experiment", "snapshot__experiment__project")
        .order_by("snapshot__experiment__key", "snapshot__data_through", "snapshot_id", "id")
        .iterator(chunk_size=chunk_size)
    )
    current: SnapshotRows | None = None
    for row in rows:
        if current is None or current.snapshot.pk != row.snapshot_id:
            if current is not None:
                yield current
            snapshot = row.snapshot
            current = SnapshotRows(snapshot, [], definitions.get(snapshot.experiment_id, {}))
        current.rows.append(row)
    if current is not None:
        yield current
