"""Reads of analysis results: the latest snapshot, the history, in the API's JSON shape."""

from typing import Any

from django.db.models import Prefetch, QuerySet

from analysis.models import AnalysisRun, ResultRow, ResultSnapshot
from experiments.models import Experiment


def snapshots_for(experiment: Experiment) -> QuerySet[ResultSnapshot]:
    return ResultSnapshot.objects.filter(experiment=experiment).prefetch_related(
        Prefetch("rows", queryset=ResultRow.objects.order_by("id"))
    )


def latest_snapshot(experiment: Experiment) -> ResultSnapshot | None:
    return snapshots_for(experiment).order_by("-computed_at", "-id").first()


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
        "method": row.method,
        "significant": row.significant,
        "status": row.status,
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
        "total_units": snapshot.total_units,
        "metrics": [row_json(r, controls.get(r.metric_key)) for r in rows if not r.is_control],
        "arms": snapshot.arms,
        "health": snapshot.health,
        "recommendation": {"action": snapshot.recommendation, "reasons": snapshot.reasons},
    }
