"""The snapshot's read of the stored per-unit aggregates (analysis/incremental.py brings them up
to date first): the kept per-variant sums for metrics without winsorization; for a winsorized
metric its caps from the highest values of its columns (a q-quantile needs only the order
statistics above it: ``stats.winsor_cap_from_highest``) and its capped sums as the kept ones less
what capping takes off those values; both corrected for the units with rows committed after
the refresh, computed from their events in the same read. The highest values (at most
``TOP_LIMIT`` a column, 1% of the units at q = 0.99) come to Python to take the quantile and the
corrections; a column needing more is summed in one SQL pass over the rows instead."""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
from django.db import DatabaseError, connections

from analysis import aggregation, incremental_tops, unit_columns
from analysis.aggregation import ExperimentAggregates, MetricAggregate, MetricSpec
from analysis.incremental_plan import (
    Plan,
    lateral_lookups,
    plan_for,
    restore_tuning,
    tune_statements,
    window_of,
)
from analysis.models import AggregateState
from analysis.sql import incremental as sql
from analysis.sql import incremental_read as read_statements
from analysis.sql.dialects import Dialect, dialect_for
from analysis.sql.incremental_tops import column_code
from analysis.unit_sums import Sums
from core.replica import primary_reads
from stats import order_statistics_needed, winsor_cap_from_highest

logger = logging.getLogger(__name__)


def experiment_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
) -> ExperimentAggregates:
    """``aggregation.experiment_aggregates`` from the stored rows, after ``refresh`` returned
    True, in the caller's consistent read. Metrics without winsorization come from the sums
    kept with the rows, the winsorized ones from one pass over the rows (their caps depend on
    every unit), both corrected for the units with rows committed since the refresh (computed
    from their events here), read on the primary (``core.replica.primary_reads``); metrics the
    rows do not hold come from the full statement, on the caller's database. Falls
    back to the full statement for all when the rows are not those of this cut-off or a read
    fails on the data."""
    window = window_of(experiment_id, project_id, since, through)
    plan = plan_for(metrics, since)
    with primary_reads() as alias:  # the rows are in an unlogged table: the primary only
        result = _read_stored(alias, plan, window) if plan is not None else None
    if result is None:
        return aggregation.experiment_aggregates(metrics=metrics, **window)
    counts, stored = result
    if not all(aggregation.is_finite(a) for a in stored.values()):
        return aggregation.experiment_aggregates(metrics=metrics, **window)
    rest = [m for m in metrics if m.key not in stored]
    if not rest:
        return ExperimentAggregates(counts, stored)
    others = aggregation.experiment_aggregates(metrics=rest, **window)
    return ExperimentAggregates(counts, {**stored, **others.metrics}, dict(others.errors))


def pre_start_exposures(*, experiment_id: int, project_id: int, since: datetime) -> int | None:
    """How many exposures of the experiment are stamped before the phase start: the count kept
    with the stored rows up to their watermark, plus those above it (read by the id index:
    only the exposures since the refresh). None when no ready rows are kept for this phase."""
    with primary_reads() as alias:
        state = AggregateState.objects.using(alias).filter(experiment_id=experiment_id).first()
        if state is None or not state.ready or state.since != since:
            return None
        d = dialect_for(connections[alias])
        params = {
            "project": project_id,
            "experiment": experiment_id,
            "since": d.param_ts(since),
            "x_hi": state.exposure_watermark,
        }
        with connections[alias].cursor() as cursor:
            cursor.execute(sql.pre_start_sql("id > %(x_hi)s"), params)
            return state.pre_start + cursor.fetchone()[0]


def _read_stored(
    alias: str, plan: Plan, window: dict[str, Any]
) -> tuple[aggregation.ExposureCounts, dict[str, MetricAggregate]] | None:
    """The counts and the stored metrics' statistics, or None when the rows are not those of
    this cut-off or a read failed on the data (logged)."""
    experiment_id = window["experiment_id"]
    state = AggregateState.objects.using(alias).filter(experiment_id=experiment_id).first()
    if not _current(state, plan, window["through"]):
        logger.info("experiment %s: stored aggregates not usable; full statement", experiment_id)
        return None
    d = dialect_for(connections[alias])
    params = plan.params(d, window, x_hi=state.exposure_watermark, e_hi=state.event_watermark)
    try:
        with d.statement_scope():
            previous_settings = tune_statements(d)
            previous = partial(incremental_tops.previous_caps, alias, experiment_id, plan)
            tops = incremental_tops.thresholds_of(state)
            result = _read(d, plan, Sums.load(state.sums), params, previous, tops)
            restore_tuning(d, previous_settings)
            return result
    except DatabaseError as exc:
        if not d.is_per_metric_failure(exc):
            raise
        logger.warning(
            "experiment %s: reading the stored aggregates failed (%s)", experiment_id, exc
        )
        return None


TOP_LIMIT = 50_000  # a cap needing more of the highest values is computed by one pass instead


def _read(
    d: Dialect,
    plan: Plan,
    totals: Sums,
    params: dict[str, Any],
    previous: Callable[[], dict[tuple[int, str], float]],
    thresholds: dict[int, float],
) -> tuple[aggregation.ExposureCounts, dict[str, MetricAggregate]]:
    """The counts and every stored metric's statistics: the kept sums, corrected for the units
    with rows above the watermarks; a winsorized metric's caps from the highest values of its
    columns (the q-quantile needs only the values above it; ``_tops``), and its capped sums as
    the kept ones less what capping takes off those values."""
    lateral = lateral_lookups(d)
    s = plan.stored
    with d.connection.cursor() as cursor:
        cursor.execute(read_statements.hot_sums_sql(d, s, lateral), params)
        for row in cursor.fetchall():
            totals.add([row[1:]], sign=1 if row[0] else -1)
        codes = {name: i for i, name in enumerate(plan.names)}
        columns = {i: unit_columns.metric_columns(i, m, codes) for i, m in enumerate(plan.metrics)}
        clean = totals.clean_units()
        capped = {i: cols for i, cols in columns.items() if _capped(cols)}
        wanted, passes = [], []
        for i, cols in capped.items():
            needs = [(i, "v" if role == "value" else "x", c) for role, c in cols.items()]
            needs = [
                (slot, c, order_statistics_needed(clean, float(col.cap_quantile)))
                for slot, c, col in needs
                if col.cap_quantile
            ]
            if all(k <= TOP_LIMIT for _, _, k in needs):
                wanted += needs
            else:
                passes.append(i)
        out: dict[str, MetricAggregate] = {}
        if wanted:
            tops = _tops(cursor, d, s, wanted, params, previous, thresholds)
            for i in capped:
                if i not in passes:
                    mine = {(c, n) for n, (slot, c, _) in enumerate(wanted) if slot == i}
                    out[plan.metrics[i].key] = _capped_aggregate(
                        i, plan.metrics[i], columns[i], totals, clean, tops, mine
                    )
        if passes:
            chosen = [columns[i] for i in passes]
            cursor.execute(read_statements.read_sql(d, s, passes, chosen, lateral), params)
            _, aggregates = aggregation.read_rows(
                cursor.fetchall(), [plan.metrics[i] for i in passes], chosen
            )
            out.update(aggregates)
    for i, metric in enumerate(plan.metrics):
        if i not in capped:
            out[metric.key] = MetricAggregate(totals.stats(i, metric))
    return totals.counts(), out


ABOVE_LIMIT = 4 * TOP_LIMIT


def _tops(
    cursor: Any,
    d: Dialect,
    s: sql.Stored,
    wanted: Sequence[tuple[int, str, int]],
    params: dict[str, Any],
    previous: Callable[[], dict[tuple[int, str], float]],
    thresholds: dict[int, float],
) -> dict[int, list[tuple]]:
    """Per index of ``wanted`` (slot, "v" or "x", k): its k highest rows (unit_id, variant_id,
    the slot's v and x). One read fetches every value at or above a guard: with every column's
    threshold kept (PostgreSQL, ``incremental_tops.keep_thresholds``), the thresholds, from
    the top units' table alone (UnitAggregateTop holds every analysed unit with a stored value
    at or above a threshold, with its row's values); else GUARD times the previous snapshot's
    caps (``previous()``, read only then), by a scan of the rows. A column for which that is
    fewer than k values (its cap fell, or it has no guard) is read by its own ordered scan."""
    lateral = lateral_lookups(d)
    tops: dict[int, list[tuple]] = {}
    missing = list(range(len(wanted)))
    codes = [column_code(slot, c) for slot, c, _ in wanted]
    kept = all(code in thresholds for code in codes)
    if kept:
        guards = [
            (slot, c, thresholds[code]) for (slot, c, _), code in zip(wanted, codes, strict=True)
        ]
    else:
        caps, guard = previous(), incremental_tops.GUARD
        guards = [(slot, c, caps.get((slot, c), 0.0) * guard) for slot, c, _ in wanted]
    if all(g > 0 for _, _, g in guards):
        if kept:
            cursor.execute(
                read_statements.above_top_sql(d, s, guards, ABOVE_LIMIT, lateral), params
            )
            rows = cursor.fetchall()
            by_slot: dict[int, list[tuple]] = {}
            for slot, *row in rows:
                by_slot.setdefault(slot, []).append(tuple(row))
        else:
            cursor.execute(read_statements.above_sql(d, s, guards, ABOVE_LIMIT, lateral), params)
            rows = cursor.fetchall()
            slots = sorted({slot for slot, _, _ in guards})
            by_slot = {
                slot: [(r[0], r[1], r[2 + 2 * n], r[3 + 2 * n]) for r in rows]
                for n, slot in enumerate(slots)
            }
        if len(rows) < ABOVE_LIMIT:
            missing = []
            for n, ((slot, c, k), (_, _, g)) in enumerate(zip(wanted, guards, strict=True)):
                mine = by_slot.get(slot, [])
                chosen = _highest([r[2 if c == "v" else 3] for r in mine], g, k)
                if chosen is None:
                    missing.append(n)
                else:
                    tops[n] = [(r[0], int(r[1]), r[2], r[3]) for r in map(mine.__getitem__, chosen)]
    if missing:
        cursor.execute(read_statements.top_sql(d, s, [wanted[n] for n in missing], lateral), params)
        for q, unit_id, variant_id, *values in cursor.fetchall():
            tops.setdefault(missing[int(q)], []).append((unit_id, int(variant_id), *values))
    return tops


def _highest(values: list[float], guard: float, k: int) -> list[int] | None:
    """The positions of the ``k`` highest of ``values`` at or above ``guard``, highest first;
    None when fewer than k are."""
    column = np.asarray(values, dtype=float)
    above = np.flatnonzero(column >= guard)
    if len(above) < k:
        return None
    return above[np.argsort(-column[above], kind="stable")[:k]].tolist()


def _capped_aggregate(
    slot: int,
    metric: MetricSpec,
    columns: dict,
    totals: Sums,
    clean: int,
    tops: dict[int, list[tuple]],
    mine: set[tuple[str, int]],
) -> MetricAggregate:
    """A winsorized metric: caps from the highest values, per-variant sums capped."""
    roles = {("v" if role == "value" else "x"): role for role in columns}
    caps: dict[str, float] = {}
    for c, n in mine:
        values = [row[2] if c == "v" else row[3] for row in tops.get(n, [])]
        cap = winsor_cap_from_highest(values, clean, float(columns[roles[c]].cap_quantile))
        if cap is not None:
            caps[roles[c]] = cap
    cv, cx = caps.get(roles["v"]), caps.get(roles.get("x", ""))
    units = {row[0]: row[1:] for n in (n for _, n in mine) for row in tops.get(n, [])}
    return MetricAggregate(totals.stats(slot, metric, _taken(list(units.values()), cv, cx)), caps)


def _taken(rows: list[tuple], cv: float | None, cx: float | None) -> dict[int, list[float]]:
    """Per variant, what capping v at ``cv`` and x at ``cx`` (None: not capped) takes off the
    sums of v, v², x, x² and v·x of ``rows`` (variant, v, x): only values above a cap change."""
    if not rows:
        return {}
    variant = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    v = np.fromiter((r[1] for r in rows), dtype=float, count=len(rows))
    x = np.fromiter((r[2] for r in rows), dtype=float, count=len(rows))
    kept_v = np.minimum(v, cv) if cv is not None else v
    kept_x = np.minimum(x, cx) if cx is not None else x
    off = np.stack(
        [
            v - kept_v,
            v * v - kept_v * kept_v,
            x - kept_x,
            x * x - kept_x * kept_x,
            v * x - kept_v * kept_x,
        ]
    )
    return {int(g): off[:, variant == g].sum(axis=1).tolist() for g in np.unique(variant)}


def _capped(columns: dict) -> bool:
    return any(c.cap_quantile is not None for c in columns.values())


def _current(state: AggregateState | None, plan: Plan, through: datetime) -> bool:
    return (
        state is not None
        and state.ready
        and state.signature == plan.signature
        and state.through == through
    )
