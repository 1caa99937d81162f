"""SQL for the time views: per-day, per-variant sufficient statistics of each metric, by calendar
day and by day since each unit's first exposure; raw events never reach Python.

The rules, which tests/analysis/test_time_aggregation.py checks on hand-computed data on SQLite
and PostgreSQL:

Units are the snapshot's (``analysis/aggregation.py``): first exposed in the phase window by the
cut-off ``through``, to one variant; the others are left out. A unit's metric window is
``[t0, t0 + W)`` (W the metric's conversion window), and only events stamped at or before the
cut-off count, as in the cumulative analysis.

Calendar day ``c`` (UTC midnight to midnight). Day 0 is the phase's first day, or, when the
phase is longer than ``MAX_CALENDAR_DAYS``, the day that many days before the cut-off's day
(inclusive): the view covers at most the last 60 days. On day ``c`` a unit counts when its window
meets the day at or before the cut-off (``t0 < end of day`` and ``t0 + W > start of day``), and
its value is the metric over its events stamped that day inside its window: 1 if any
(binomial), their number (count), the sum of their values (mean), or both sums (ratio). Units
without such events count with 0. The cut-off's day is partial.

Day ``k`` since exposure (``k = 0, 1, ...``): the 24 hours ``[t0 + k days, t0 + (k + 1) days)``
of each unit. A unit counts on day ``k`` when that day lies inside its window (``24 (k + 1) <=
W``: only whole days) and is complete at the cut-off (``t0 + (k + 1) days <= through``), so an
incomplete day never dilutes the last point; its value is the metric over that day's events.
At most ``MAX_EXPOSURE_DAYS`` days.

Winsorization: each per-unit-day value is capped at the cap the snapshot used for the metric's
per-unit values (``caps``, the q-quantile of whole-window values; for non-negative values a
day's value is at most the unit's whole-window value, so the cap bites only on extreme units).
No CUPED (a day's value has no pre-exposure twin).

One statement per ``METRICS_PER_QUERY`` metrics (``analysis/sql/time_views.py``); a statement
that fails on a metric's data is retried metric by metric, as ``experiment_aggregates`` does,
and a metric that still fails gets a reason in ``errors``. A metric's event filters and value
property apply as in the cumulative analysis (the same per-event property columns,
``unit_columns.property_columns``).
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db import DatabaseError

from analysis import aggregation, unit_columns
from analysis.aggregation import METRICS_PER_QUERY, MetricSpec
from analysis.sql import time_views as sql
from analysis.sql.dialects import Dialect
from stats import SampleStats

logger = logging.getLogger(__name__)

MAX_CALENDAR_DAYS = 60  # the calendar view covers at most the last 60 days
MAX_EXPOSURE_DAYS = 30  # days since exposure: 0 .. 29 at most
ByDay = dict[int, dict[int, SampleStats]]  # day index -> variant id -> statistics


@dataclass(frozen=True)
class DayAggregates:
    """One metric's per-day statistics in both views; a day without units is absent."""

    calendar: ByDay = field(default_factory=dict)
    since_exposure: ByDay = field(default_factory=dict)


@dataclass(frozen=True)
class TimeAggregates:
    first_day: date  # calendar day 0 (UTC)
    calendar_days: int  # days 0 .. calendar_days - 1; the last is the cut-off's
    metrics: dict[str, DayAggregates]  # by metric key; a metric in ``errors`` is absent
    errors: dict[str, str] = field(default_factory=dict)


def calendar_span(
    since: datetime, through: datetime, max_days: int = MAX_CALENDAR_DAYS
) -> tuple[datetime, int]:
    """(UTC midnight of day 0, number of calendar days) for a phase from ``since`` to
    ``through``: every day from the phase's first to the cut-off's, the last ``max_days``."""
    first = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = through.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = min((last - first).days + 1, max_days)
    return last - timedelta(days=days - 1), days


def _columns(
    index: int,
    metric: MetricSpec,
    codes: dict[str, int],
    caps: dict[str, float],
    aliases: dict[tuple, str],
) -> tuple[dict[str, sql.DayColumn], dict[str, float]]:
    """The metric's per-unit-day columns and the parameters of their caps (``aliases``: the
    property columns of ``unit_columns.property_columns``)."""
    hours = int(metric.window_hours)
    code = codes[metric.event_name]
    reads = unit_columns.property_reads(metric, code, aliases)
    kind = metric.kind if metric.kind in ("binomial", "count") else "sum"
    params: dict[str, float] = {}

    def cap(role: str) -> str | None:
        value = caps.get(role) if metric.kind != "binomial" else None
        if value is None or not math.isfinite(value):
            return None
        params[f"cap{index}_{role[0]}"] = float(value)
        return f"cap{index}_{role[0]}"

    cols = {"value": sql.DayColumn(f"m{index}_v", kind, code, hours, cap("value"), **reads)}
    if metric.kind == "ratio":
        den = codes[metric.denominator_event]
        cols["denominator"] = sql.DayColumn(f"m{index}_d", "sum", den, hours, cap("denominator"))
    return cols, params


def _read(
    rows: Sequence[Sequence[object]],
    metrics: Sequence[MetricSpec],
    columns: Sequence[dict[str, sql.DayColumn]],
    windows: list[int],
) -> dict[str, DayAggregates]:
    """(view, variant id, day, units per window..., sums...) rows -> per-metric statistics."""
    out = {m.key: DayAggregates() for m in metrics}
    for row in rows:
        view, variant_id, day = int(row[0]), int(row[1]), int(row[2])  # type: ignore[arg-type]
        units = dict(zip(windows, (int(x or 0) for x in row[3 : 3 + len(windows)]), strict=True))  # type: ignore[arg-type]
        values = [float(x or 0) for x in row[3 + len(windows) :]]  # type: ignore[arg-type]
        pos = 0
        for metric, cols in zip(metrics, columns, strict=True):
            fields = {"sum": values[pos], "sum_sq": values[pos + 1]}
            pos += 2
            if "denominator" in cols:
                fields.update(
                    den_sum=values[pos], den_sum_sq=values[pos + 1], sum_prod=values[pos + 2]
                )
                pos += 3
            n = units[int(metric.window_hours)]
            if n <= 0:
                continue
            target = out[metric.key].calendar if view == sql.CALENDAR else None
            target = out[metric.key].since_exposure if target is None else target
            target.setdefault(day, {})[variant_id] = SampleStats(n=n, **fields)
    return out


def _finite(aggregates: DayAggregates) -> bool:
    return all(
        math.isfinite(x)
        for view in (aggregates.calendar, aggregates.since_exposure)
        for by_variant in view.values()
        for s in by_variant.values()
        for x in (s.sum, s.sum_sq, s.den_sum, s.den_sum_sq, s.sum_prod)
    )


@dataclass(frozen=True)
class _Window:
    """What every statement of one computation shares."""

    experiment_id: int
    project_id: int
    since: datetime
    through: datetime
    day0: datetime
    calendar_days: int
    max_exposure_days: int
    caps: dict[str, dict[str, float]]
    dialect: Dialect
    lookup: bool  # read each unit's events by an index range scan (aggregation.read_strategy)


def _group(group: Sequence[MetricSpec], w: _Window) -> dict[str, DayAggregates]:
    """One statement for ``group``, in the dialect's statement scope."""
    d = w.dialect
    names: list[str] = []
    for m in group:
        for name in (m.event_name, m.denominator_event if m.kind == "ratio" else ""):
            if name and name not in names:
                names.append(name)
    codes = {name: i for i, name in enumerate(names)}
    aliases = unit_columns.property_columns(group, codes)
    properties, property_params = unit_columns.metric_event_columns(aliases, d)
    columns, caps = [], {}
    for i, m in enumerate(group):
        cols, params = _columns(i, m, codes, w.caps.get(m.key, {}), aliases)
        columns.append(cols)
        caps.update(params)
    windows = sorted({int(m.window_hours) for m in group})
    exposure_days = min(w.max_exposure_days, windows[-1] // 24)
    params: dict[str, object] = {
        "experiment": w.experiment_id,
        "project": w.project_id,
        "since": d.param_ts(w.since),
        "through": d.param_ts(w.through),
        **{f"day{i}": d.param_ts(w.day0 + timedelta(days=i)) for i in range(w.calendar_days)},
        **{f"name{i}": name for i, name in enumerate(names)},
        **caps,
        **property_params,
    }
    with d.statement_scope(), d.connection.cursor() as cursor:
        unindexed = bool(properties and w.lookup and d.unindexed_properties(cursor, w.project_id))
        statement = sql.time_views_statement(
            d,
            windows,
            columns,
            len(names),
            w.calendar_days,
            exposure_days,
            w.lookup,
            properties,
            unindexed,
        )
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    return _read(rows, group, columns, windows)


def _fail(metric: MetricSpec, exc: DatabaseError, w: _Window, errors: dict[str, str]) -> None:
    """Record why ``metric`` failed, or re-raise an error of the database itself."""
    if not w.dialect.is_per_metric_failure(exc):
        raise exc
    errors[metric.key] = aggregation.failure_reason(exc)


def time_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
    caps: dict[str, dict[str, float]] | None = None,
    max_days: int = MAX_CALENDAR_DAYS,
    max_exposure_days: int = MAX_EXPOSURE_DAYS,
    strategy: str | None = None,
) -> TimeAggregates:
    """Every metric's per-day statistics in both views (module docstring); ``caps`` are the
    snapshot's winsorization caps by metric key and role ("value", "denominator");
    ``strategy`` how to read events (default ``aggregation.read_strategy()``)."""
    day0, calendar_days = calendar_span(since, through, max_days)
    window = _Window(
        experiment_id,
        project_id,
        since,
        through,
        day0,
        calendar_days,
        max_exposure_days,
        caps or {},
        aggregation.current_dialect(),
        (strategy or aggregation.read_strategy()) == aggregation.INDEX_LOOKUP,
    )
    out: dict[str, DayAggregates] = {}
    errors: dict[str, str] = {}
    for start in range(0, len(metrics), METRICS_PER_QUERY):
        group = list(metrics[start : start + METRICS_PER_QUERY])
        try:
            out.update(_group(group, window))
            continue
        except DatabaseError as exc:
            if not window.dialect.is_per_metric_failure(exc) or len(group) == 1:
                _fail(group[0], exc, window, errors)
                continue
        for metric in group:  # the group failed: each metric alone, in its own scope
            try:
                out.update(_group([metric], window))
            except DatabaseError as exc:
                _fail(metric, exc, window, errors)
    for key, aggregates in list(out.items()):
        if not _finite(aggregates):
            del out[key]
            errors[key] = aggregation.OVERFLOW_REASON
    for key, reason in errors.items():
        logger.warning(
            "experiment %s: time views of '%s' not computed: %s", experiment_id, key, reason
        )
    return TimeAggregates(day0.date(), calendar_days, out, errors)
