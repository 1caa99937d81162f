"""The overview across a project's experiments: each with its latest recommendation and
primary lift."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from analysis.models import ResultRow, ResultSnapshot
from analysis.results import latest_snapshot_subquery
from experiments.models import Experiment, Project


@dataclass(frozen=True)
class OverviewRow:
    experiment: Experiment
    snapshot: ResultSnapshot | None
    days_running: float | None
    primary: list[dict[str, Any]]  # per (primary metric, treatment arm): lift and interval


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
            latest_snapshot_id=latest_snapshot_subquery("pk"),
            latest_recommendation=latest_snapshot_subquery("recommendation"),
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
    primary = _primary_lifts(ids)
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


def _primary_lifts(snapshot_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per snapshot, each (primary metric, treatment arm) with its lift and interval."""
    primary: dict[int, list[dict[str, Any]]] = {}
    for r in ResultRow.objects.filter(
        snapshot_id__in=snapshot_ids, role="primary", is_control=False
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
    return primary
