"""The top units of winsorized columns (``UnitAggregateTop``, PostgreSQL): per stored column of
a winsorized metric, every unit whose stored value is at or above a threshold, so that the
snapshot's read (analysis/incremental_read.py) finds the values above the column's cap (a high
quantile) among few units instead of scanning every stored row. The thresholds are kept in
``AggregateState.thresholds`` and set here, by the refresh (analysis/incremental.py), from the
previous snapshot's caps; every write of the rows keeps the table true in the same statement
(``analysis.sql.incremental_tops.keep_tops_ctes``)."""

from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS

from analysis.models import AggregateState, ResultRow, ResultSnapshot
from analysis.sql import incremental_tops as sql

if TYPE_CHECKING:
    from analysis.incremental_plan import Plan

GUARD = 0.75  # a column's threshold, of the previous snapshot's cap, when it is set
KEPT = (0.5, 0.9)  # the range, in caps, in which a threshold is kept rather than set anew


def thresholds_of(state: AggregateState) -> dict[int, float]:
    """The state's thresholds of UnitAggregateTop, by column code."""
    return {int(code): float(value) for code, value in (state.thresholds or {}).items()}


def previous_caps(alias: str, experiment_id: int, plan: "Plan") -> dict[tuple[int, str], float]:
    """The caps the experiment's latest snapshot used, by (slot, "v" or "x"): a guess of the
    next snapshot's."""
    latest = (
        ResultSnapshot.objects.using(alias)
        .filter(experiment_id=experiment_id)
        .order_by("-data_through", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    slots = {m.key: i for i, m in enumerate(plan.metrics)}
    rows = ResultRow.objects.using(alias).filter(
        snapshot_id=latest, is_control=True, metric_key__in=list(slots)
    )
    out = {}
    for key, details in rows.values_list("metric_key", "details"):
        for role, cap in ((details or {}).get("winsor_caps") or {}).items():
            if isinstance(cap, int | float):
                out[(slots[key], "v" if role == "value" else "x")] = float(cap)
    return out


def keep_thresholds(
    plan: "Plan", state: AggregateState, cursor: Any, params: dict
) -> dict[str, float]:
    """The thresholds after this refresh: per winsorized column with a positive cap in the
    previous snapshot, its threshold kept while it stays within KEPT of that cap, else set to
    GUARD times it, its top units found anew (one scan of the rows: when the cap fell by a
    sixth or rose by half since the threshold was set); a column without a cap has none. So
    the read finds the values above its cap among few units (analysis/incremental_read.py)."""
    caps = previous_caps(DEFAULT_DB_ALIAS, state.experiment_id, plan)
    current = thresholds_of(state)
    wanted = {
        sql.column_code(slot, c): cap
        for (slot, c), cap in caps.items()
        if cap > 0 and slot < len(plan.metrics) and plan.metrics[slot].winsorize_quantile
    }
    kept: dict[int, float] = {}
    for code, cap in sorted(wanted.items()):
        threshold = current.get(code)
        if threshold is not None and KEPT[0] * cap <= threshold <= KEPT[1] * cap:
            kept[code] = threshold
            continue
        kept[code] = GUARD * cap
        for statement in sql.reset_top_sql(plan.stored, code):
            cursor.execute(statement, {**params, "threshold": kept[code]})
    for code in set(current) - set(kept):
        cursor.execute(sql.forget_top_sql(code), params)
    if any(kept.get(code) != current.get(code) for code in kept):
        cursor.execute(f"ANALYZE {sql.TOP_TABLE}")  # its statistics, for the next writes' plans
    return {str(code): value for code, value in kept.items()}
