"""The data of one release step, in SQL: units per side and per-metric sufficient statistics.

A side is the units with a flag exposure of one variation in a time window (the step's, or for
a 100% step the baseline's window of equal length before it); a unit served both variations in
the window is excluded and counted. Each unit's metric events count from its first exposure in
the window to the window's end. Per unit, as the experiments' aggregation
(analysis/aggregation.py): binomial 1 when any event, count the number of events, mean the sum
of values, ratio numerator and denominator sums; then per side n, sum, sum of squares (and the
denominator's sums and cross-products): one row per side for all the release's mean-type
metrics in one statement. Quantile metrics read the step's event values with their unit ids
(clustered standard error): that is the one place values travel to Python, bounded by the
step's own events.

Metrics from event properties (docs/analysts.md) apply here as in experiments, through the same
SQL (analysis/sql/properties.py): only the metric event's occurrences that pass its filters
count, and a value property replaces the event's value (an event without a number there adds
nothing, and is no sample of a quantile); never on a ratio's denominator event. Their names and
values are bound parameters; the statement then reads the events' rows (properties are not in
``metricevent_unit_ts``), which a step's few events afford.

The exposure window is read through ``flag_exposure_env_flag_ts`` and the events through
``metricevent_unit_ts`` (one index lookup per unit), so the cost follows the step's data, not
the table's history. Portable SQL: the same statements run on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import connection

from analysis.sql.dialects import dialect_for
from analysis.sql.properties import PropertySQL
from experiments.filters import PropertyFilter
from experiments.models import Environment
from stats.estimators import SampleStats
from stats.quantiles import arm_quantile

from .policy import MeanArms, MetricSpec, QuantileArms

BASELINE, NEW = "baseline", "new"


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a variation's units exposed in [start, end)."""

    variation: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class MetricSource:
    spec: MetricSpec
    event_name: str
    denominator_event: str = ""
    filters: tuple[PropertyFilter, ...] = ()  # on event_name's events (experiments.filters)
    value_property: str = ""

    @property
    def reads_properties(self) -> bool:
        return bool(self.filters or self.value_property)


class _Properties:
    """The SQL of the sources' filters and value properties over ``e.properties``, with named
    parameters (``q0``, ...): ``bind`` turns a statement's positional ``%s`` parameters into
    named ones too, so that both kinds can share it."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self.sql = PropertySQL(dialect_for(connection), "e.properties", self._bind)

    def _bind(self, value: object) -> str:
        name = f"q{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    def match(self, src: MetricSource) -> str:
        return f" AND ({self.sql.match(src.filters)})" if src.filters else ""

    def value(self, src: MetricSource) -> str:
        return self.sql.number(src.value_property) if src.value_property else "e.value"

    def bind(self, sql: str, params: Sequence[object]) -> tuple[str, dict[str, object]]:
        parts = sql.split("%s")
        assert len(parts) == len(params) + 1
        named = dict(self.params)
        out = [parts[0]]
        for i, (value, part) in enumerate(zip(params, parts[1:], strict=True)):
            named[f"p{i}"] = value
            out += [f"%(p{i})s", part]
        return "".join(out), named


def _ts(value: datetime) -> object:
    """A time parameter as the engine stores times (SQLite compares text: UTC, no offset)."""
    return connection.ops.adapt_datetimefield_value(value)


# A project holdout's units never get a rollout (docs/flags.md "Holdout"): they are no part of
# the step's split (left in, they would all count as baseline: a sample-ratio mismatch), so the
# units a holdout running in the window recorded as its own are left out of both sides.
_NOT_HELD_OUT = """AND NOT EXISTS (
            SELECT 1 FROM assignments_holdoutexposure h
            JOIN experiments_holdout o ON o.id = h.holdout_id
            WHERE h.unit_id = x.unit_id AND h.arm = 0
              AND o.project_id = (SELECT project_id FROM experiments_environment WHERE id = %s)
              AND o.started_at < %s AND (o.ended_at IS NULL OR o.ended_at > %s))"""


def _units_cte(
    environment_id: int, flag_id: int, variations: Sequence[str], start: datetime, end: datetime
) -> tuple[str, list[object]]:
    """Per unit of the window: its first exposure, and whether it saw one variation only (the
    ``per_unit`` CTE every statement starts with, and its parameters); a running holdout's
    units are not in it."""
    chosen = "variation IN (%s, %s)" if len(variations) == 2 else "variation = %s"
    sql = f"""
    per_unit AS (
        SELECT unit_id, MIN(variation) AS v, MAX(variation) AS v_max, MIN(ts) AS t0
        FROM assignments_flagexposure x
        WHERE project_id = %s AND environment_id = %s AND flag_id = %s
          AND ts >= %s AND ts < %s AND {chosen}
          {_NOT_HELD_OUT}
        GROUP BY unit_id
    )"""
    held = [environment_id, _ts(end), _ts(start)]
    # The project as a value, not a subquery: the planner then reads its partitions only.
    project_id = Environment.objects.filter(pk=environment_id).values_list("project_id", flat=True)
    where = [project_id.first(), environment_id, flag_id, _ts(start), _ts(end)]
    return sql, [*where, *variations, *held]


def _events_join(outer: bool, names: str, properties: bool = False) -> str:
    """Each unit's events of the window, by one index lookup per unit.

    On PostgreSQL the lookup is a LATERAL subquery fenced with OFFSET 0: as a plain join,
    with the step's rows not yet in the table statistics (a fresh step; autovacuum behind),
    the planner may pick a nested loop that scans all the project's events per unit (minutes,
    not milliseconds). SQLite has no LATERAL; its planner looks events up per unit by the
    index on its own. ``properties``: the lookup also reads the events' properties."""
    kind = "LEFT JOIN" if outer else "JOIN"
    where = (
        "e.project_id = %s AND e.unit_id = u.unit_id AND e.ts >= u.t0 AND e.ts < %s "
        f"AND e.name {names}"
    )
    if connection.vendor == "postgresql":
        columns = "e.name, e.value, e.properties" if properties else "e.name, e.value"
        return (
            f"{kind} LATERAL (SELECT {columns} FROM assignments_metricevent e "
            f"WHERE {where} OFFSET 0) e ON TRUE"
        )
    return f"{kind} assignments_metricevent e ON {where}"


# The events the statistics record: the table's own count, or on the partitioned layout
# (assignments/partitions.py) its leaf partitions' (the parent's is never recorded).
_RECORDED_EVENTS = """
SELECT COALESCE(SUM(c.reltuples) FILTER (WHERE c.reltuples > 0), 0) FROM pg_class c
WHERE c.oid = 'assignments_metricevent'::regclass
   OR c.oid IN (SELECT relid FROM pg_partition_tree('assignments_metricevent') WHERE isleaf)
"""


def statistics_refresh(units: int) -> bool:
    """ANALYZE the event tables when PostgreSQL's statistics are plainly stale: fewer events
    recorded than the step has units (a fresh installation, or autovacuum off or behind). With
    such statistics the planner may look each unit's events up through the wrong index (all
    the project's events per unit: minutes instead of milliseconds). Tables with statistics are
    never touched; True when it analysed."""
    if connection.vendor != "postgresql" or units <= 0:
        return False
    with connection.cursor() as cursor:
        cursor.execute(_RECORDED_EVENTS)
        (tuples,) = cursor.fetchone()
        if tuples >= units:
            return False
        cursor.execute("ANALYZE assignments_metricevent")
        cursor.execute("ANALYZE assignments_flagexposure")
    return True


def _unit_columns(
    sources: Sequence[MetricSource], props: _Properties
) -> tuple[list[str], list[object]]:
    """The per-unit value (and denominator) columns: c<i> and d<i>."""
    cols, params = [], []
    for i, src in enumerate(sources):
        kind, event = src.spec.kind, f"e.name = %s{props.match(src)}"
        if kind == "binomial":
            cols.append(f"MAX(CASE WHEN {event} THEN 1.0 ELSE 0.0 END) AS c{i}")
        elif kind == "count":
            cols.append(f"SUM(CASE WHEN {event} THEN 1.0 ELSE 0.0 END) AS c{i}")
        else:
            cols.append(f"SUM(CASE WHEN {event} THEN {props.value(src)} ELSE 0.0 END) AS c{i}")
        params.append(src.event_name)
        if kind == "ratio":
            cols.append(f"SUM(CASE WHEN e.name = %s THEN e.value ELSE 0.0 END) AS d{i}")
            params.append(src.denominator_event)
    return cols, params


def _side_sums(sources: Sequence[MetricSource]) -> list[str]:
    sums = ["COUNT(*)"]
    for i, src in enumerate(sources):
        c = f"COALESCE(c{i}, 0.0)"
        sums += [f"SUM({c})", f"SUM({c} * {c})"]
        if src.spec.kind == "ratio":
            d = f"COALESCE(d{i}, 0.0)"
            sums += [f"SUM({d})", f"SUM({d} * {d})", f"SUM({c} * {d})"]
    return sums


def _names(sources: Sequence[MetricSource]) -> list[str]:
    names = {s.event_name for s in sources} | {s.denominator_event for s in sources}
    return sorted(n for n in names if n)


def counts_statement(
    *, environment_id: int, flag_id: int, variations: Sequence[str], start: datetime, end: datetime
) -> tuple[str, list[object]]:
    units, params = _units_cte(environment_id, flag_id, variations, start, end)
    sql = f"""
    WITH {units}
    SELECT CASE WHEN v = v_max THEN v ELSE '' END AS side, COUNT(*)
    FROM per_unit GROUP BY CASE WHEN v = v_max THEN v ELSE '' END"""
    return sql, params


def window_counts(**window: object) -> dict[str, int]:
    """Units per variation in the window (``environment_id``, ``flag_id``, ``variations``,
    ``start``, ``end``), and ``excluded`` (served more than one)."""
    with connection.cursor() as cursor:
        cursor.execute(*counts_statement(**window))
        rows = cursor.fetchall()
    counts = {v: 0 for v in window["variations"]}
    counts["excluded"] = 0
    for side, n in rows:
        counts[side or "excluded"] = int(n)
    return counts


def means_statement(
    *,
    project_id: int,
    environment_id: int,
    flag_id: int,
    variations: Sequence[str],
    start: datetime,
    end: datetime,
    sources: Sequence[MetricSource],
) -> tuple[str, list[object] | dict[str, object]]:
    units, params = _units_cte(environment_id, flag_id, variations, start, end)
    props = _Properties()
    cols, col_params = _unit_columns(sources, props)
    names = _names(sources)
    name_list = ", ".join(["%s"] * len(names))
    reads = any(src.reads_properties for src in sources)
    sql = f"""
    WITH {units},
    unit_values AS (
        SELECT u.unit_id, u.v, {", ".join(cols)}
        FROM per_unit u
        {_events_join(True, f"IN ({name_list})", reads)}
        WHERE u.v = u.v_max
        GROUP BY u.unit_id, u.v
    )
    SELECT v, {", ".join(_side_sums(sources))} FROM unit_values GROUP BY v"""
    positional = [*params, *col_params, project_id, _ts(end), *names]
    return props.bind(sql, positional) if reads else (sql, positional)


def mean_stats(
    *, sources: Sequence[MetricSource], **window: object
) -> dict[str, dict[str, SampleStats]]:
    """variation -> metric key -> SampleStats over the window's single-variation units."""
    with connection.cursor() as cursor:
        cursor.execute(*means_statement(sources=sources, **window))
        rows = cursor.fetchall()
    out: dict[str, dict[str, SampleStats]] = {}
    for row in rows:
        variation, n, values = row[0], int(row[1]), [float(x or 0.0) for x in row[2:]]
        per_metric, j = {}, 0
        for src in sources:
            if src.spec.kind == "ratio":
                s, ss, ds, dss, sp = values[j : j + 5]
                per_metric[src.spec.key] = SampleStats(n, s, ss, ds, dss, sp)
                j += 5
            else:
                per_metric[src.spec.key] = SampleStats(n, values[j], values[j + 1])
                j += 2
        out[variation] = per_metric
    return out


def quantile_statement(
    *,
    project_id: int,
    environment_id: int,
    flag_id: int,
    variations: Sequence[str],
    start: datetime,
    end: datetime,
    event_name: str,
    filters: tuple[PropertyFilter, ...] = (),
    value_property: str = "",
) -> tuple[str, list[object] | dict[str, object]]:
    units, params = _units_cte(environment_id, flag_id, variations, start, end)
    src = MetricSource(MetricSpec("", "quantile"), event_name, "", filters, value_property)
    props = _Properties()
    value = props.value(src)
    sql = f"""
    WITH {units}
    SELECT u.v, u.unit_id, {value}
    FROM per_unit u
    {_events_join(False, "= %s", src.reads_properties)}
    WHERE u.v = u.v_max{props.match(src)}{f" AND {value} IS NOT NULL" if value_property else ""}"""
    positional = [*params, project_id, _ts(end), event_name]
    return props.bind(sql, positional) if src.reads_properties else (sql, positional)


def quantile_values(**window: object) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """variation -> (values, unit index) of the event's values (``event_name``; with
    ``filters`` and ``value_property``, those of its metric) in the window."""
    sql, params = quantile_statement(**window)
    grouped: dict[str, tuple[list[str], list[float]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for variation, unit_id, value in cursor.fetchall():
            units, values = grouped.setdefault(variation, ([], []))
            units.append(unit_id)
            values.append(float(value))
    return {
        v: (np.asarray(values, dtype=float), np.unique(units, return_inverse=True)[1])
        for v, (units, values) in grouped.items()
    }


def quantile_arms(
    values: dict[str, tuple[np.ndarray, np.ndarray]], baseline: str, new: str, q: float
) -> QuantileArms | str:
    """Each side's q quantile with its clustered Woodruff SE, or why it cannot be had yet."""
    arms = {}
    for label, variation in ((BASELINE, baseline), (NEW, new)):
        x, units = values.get(variation, (np.empty(0), np.empty(0, dtype=int)))
        try:
            arms[label] = arm_quantile(x, q, f"the {label}", units=units)
        except ValueError as exc:
            return str(exc)
    return QuantileArms(arms[BASELINE], arms[NEW])


def mean_arms(
    stats: dict[str, dict[str, SampleStats]], baseline: str, new: str, key: str
) -> MeanArms:
    empty = SampleStats(0, 0.0, 0.0)
    return MeanArms(stats.get(baseline, {}).get(key, empty), stats.get(new, {}).get(key, empty))
