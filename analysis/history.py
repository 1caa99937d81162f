"""A phase's snapshots over time: the dashboard's thinned chart series, and the results
history API's pages."""

import math
from typing import Any

from analysis.models import ResultRow, ResultSnapshot
from analysis.results import snapshot_json, snapshots_for
from experiments.models import Experiment

HISTORY_MAX_POINTS = 240
HISTORY_PAGE_LIMIT = 100  # snapshots per page of the results history API, unless ?limit= says
HISTORY_PAGE_MAX_LIMIT = 500
OLDEST_FIRST = ("data_through", "computed_at", "id")


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


def results_history_page(
    experiment: Experiment, *, page: int = 1, limit: int = HISTORY_PAGE_LIMIT
) -> dict[str, Any]:
    """Page ``page`` (from 1) of the experiment's snapshots, oldest first, ``limit`` to a page,
    each in the API shape with its rows. Three queries whatever the page size: the count, the
    page's snapshots (with their experiment) and the page's rows."""
    total = ResultSnapshot.objects.filter(experiment=experiment).count()
    start = (page - 1) * limit
    snapshots = (snapshots_for(experiment).select_related("experiment").order_by(*OLDEST_FIRST))[
        start : start + limit
    ]
    pages = max(1, math.ceil(total / limit))
    return {
        "snapshots": [snapshot_json(s) for s in snapshots],
        "page": page,
        "limit": limit,
        "total": total,
        "pages": pages,
        "next_page": page + 1 if page < pages else None,
    }
