"""Snapshots in the API shape: the latest snapshot and run of an experiment, and a snapshot
with its rows as JSON (the results API and the dashboard read the same shape)."""

from typing import Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from analysis.models import AnalysisRun, ResultRow, ResultSnapshot
from experiments.models import Experiment


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


def latest_snapshot_subquery(field_name: str) -> Subquery:
    """``field_name`` of the latest snapshot of the outer query's experiment."""
    return Subquery(
        ResultSnapshot.objects.filter(experiment=OuterRef("pk"))
        .order_by(*LATEST_FIRST)
        .values(field_name)[:1]
    )
