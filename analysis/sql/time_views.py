"""The time views' statement: per day and variant, each metric's sufficient statistics by
calendar day (UTC) and by day since each unit's first exposure.

The rules are in ``analysis/time_aggregation.py``'s docstring. The statement::

    WITH RECURSIVE days AS (...)   0, 1, ... up to the longer of the two views
         exposed AS (...)          one row per unit (builders.exposed_cte)
         spans AS (...)            per analysed unit: its first calendar day, last calendar day
                                   in each window, complete days since exposure
         cohorts AS (...)          units per (variant, span): a few hundred rows
         at_risk AS (...)          units per (view, variant, day, window): cohorts x days
         joined AS (...)           each unit's events in its widest window, with their code,
                                   calendar day, day since exposure and window flags
         unit_days AS (...)        one row per (view, unit, day) with events: its metric values
         sums AS (...)             per (view, variant, day): sums and sums of squares
    SELECT ... FROM at_risk LEFT JOIN sums    a few rows per day

Day indexes come from comparisons with bound boundaries (calendar days) or with ``t0`` shifted
by whole days (days since exposure), as a binary search of nested CASEs (``bucket``): only the
dialect's existing time hooks (``instant``, ``shift``), about log2(days) comparisons per event.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from analysis.sql.builders import CLEAN, EventColumn, event_columns, exposed_cte, name_list
from analysis.sql.dialects import Dialect

CALENDAR, SINCE_EXPOSURE = 0, 1  # the two views, the statement's first column


@dataclass(frozen=True)
class DayColumn:
    """One per-unit-day column of a metric, an aggregate over the unit's events of that day."""

    name: str  # SQL alias in unit_days
    kind: str  # binomial (0/1: any event) | count (events) | anything else (sum of values)
    code: int  # the event name's code (its position among the statement's names)
    window_hours: int
    cap: str | None  # the parameter holding its winsorization cap, if any
    match: tuple[str, ...] = ()  # the EventColumns (kind "match") the event must pass
    value: str = "value"  # what a sum adds per event: its value, or an EventColumn ("number")


def bucket(value: str, bounds: Sequence[str], strict: bool = False) -> str:
    """How many of ``bounds`` (ascending SQL expressions) are at or below ``value`` (below it
    when ``strict``): a binary search of nested CASEs, log2(len(bounds)) comparisons a row."""
    if not bounds:
        return "0"
    mid = len(bounds) // 2
    op = "<" if strict else "<="
    below = bucket(value, bounds[:mid], strict)
    above = bucket(value, bounds[mid + 1 :], strict)
    above = str(mid + 1) if above == "0" else f"{mid + 1} + {above}"
    return f"CASE WHEN {bounds[mid]} {op} {value} THEN {above} ELSE {below} END"


def day_bounds(d: Dialect, calendar_days: int) -> list[str]:
    """The starts of calendar days 1 .. calendar_days - 1 (parameters ``day1``, ...)."""
    return [d.instant(d.param(f"day{i}")) for i in range(1, calendar_days)]


def exposure_bounds(d: Dialect, t0: str, exposure_days: int) -> list[str]:
    """``t0`` + 1, 2, ... exposure_days days."""
    return [d.shift(t0, 24 * k) for k in range(1, exposure_days + 1)]


def days_cte(days: int) -> str:
    return f"""days(d) AS (
        SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d < {max(int(days), 1) - 1}
    )"""


def spans_ctes(d: Dialect, windows: Sequence[int], calendar_days: int, exposure_days: int) -> str:
    """spans, cohorts and at_risk: the units each (view, variant, day) counts, per window.

    Calendar day ``c`` counts a unit when its window ``[t0, t0 + W)`` meets the day: from the
    day of ``t0`` (day 0 for units exposed before it) to the day of the window's end (exclusive),
    or the cut-off's day. Day ``k`` since exposure counts a unit when that day is complete at the
    cut-off (``t0 + 24 (k + 1) h <= through``) and inside the window (``24 (k + 1) <= W``)."""
    day0, bounds = d.instant(d.param("day0")), day_bounds(d, calendar_days)
    lasts = ", ".join(
        f"CASE WHEN end_{h} > {day0} THEN {bucket(f'end_{h}', bounds, strict=True)} ELSE -1 END"
        f" AS last_{h}"
        for h in windows
    )
    through = d.instant(d.param("through"))
    complete = bucket(through, exposure_bounds(d, "t0", exposure_days))
    span_columns = "first_day, " + ", ".join(f"last_{h}" for h in windows) + ", complete"
    calendar = ", ".join(
        f"SUM(CASE WHEN days.d >= c.first_day AND days.d <= c.last_{h} THEN c.units ELSE 0 END)"
        f" AS n_{h}"
        for h in windows
    )
    since = ", ".join(
        f"SUM(CASE WHEN days.d < c.complete AND days.d < {h // 24} THEN c.units ELSE 0 END)"
        f" AS n_{h}"
        for h in windows
    )
    return f""",
    spans AS (
        SELECT variant_id, {bucket("t0", bounds)} AS first_day, {lasts}, {complete} AS complete
        FROM exposed WHERE state = {CLEAN}
    ),
    cohorts AS (
        SELECT variant_id, {span_columns}, COUNT(*) AS units
        FROM spans GROUP BY variant_id, {span_columns}
    ),
    at_risk AS (
        SELECT {CALENDAR} AS view_id, c.variant_id, days.d AS day_index, {calendar}
        FROM cohorts c CROSS JOIN days WHERE days.d < {int(calendar_days)}
        GROUP BY c.variant_id, days.d
        UNION ALL
        SELECT {SINCE_EXPOSURE} AS view_id, c.variant_id, days.d AS day_index, {since}
        FROM cohorts c CROSS JOIN days WHERE days.d < {int(exposure_days)}
        GROUP BY c.variant_id, days.d
    )"""


def _events_of_unit(
    d: Dialect, names: int, widest: int, lookup: bool, properties: bool, unindexed: bool
) -> str:
    """The FROM clause pairing each unit with its events in ``[t0, t0 + widest window)`` at or
    before the cut-off: one hash join of units and events, or (``lookup``, PostgreSQL with the
    covering index: ``aggregation.read_strategy``) one index range scan per unit in unit order,
    from the indexes that also hold the events' properties when a metric reads them
    (``d.property_events``, as the metrics statement does)."""
    t = d.instant("e.ts")
    if lookup:
        where = f"""e.project_id = {d.param("project")} AND e.unit_id = u.unit_id
                  AND e.ts >= u.t0 AND e.ts < u.end_{widest} AND e.ts <= {d.param("through")}
                  AND e.name IN ({name_list(d, names)})"""
        if properties:
            columns = "e.value, e.name, e.ts, e.properties"
            return f"exposed u CROSS JOIN LATERAL {d.property_events(columns, where, unindexed)} e"
        return f"""exposed u CROSS JOIN LATERAL (
                SELECT e.value, e.name, e.ts FROM assignments_metricevent e
                WHERE {where}
                {d.fence()}
            ) e"""
    return f"""exposed u
            JOIN assignments_metricevent e
              ON e.project_id = {d.param("project")} AND e.name IN ({name_list(d, names)})
             AND e.unit_id = u.unit_id
             AND e.ts >= {d.param("since")} AND e.ts <= {d.param("through")}
             AND {t} >= u.t0 AND {t} < u.end_{widest}"""


def joined_cte(
    d: Dialect,
    windows: Sequence[int],
    names: int,
    calendar_days: int,
    exposure_days: int,
    lookup: bool = False,
    properties: Sequence[EventColumn] = (),
    unindexed: bool = True,
) -> str:
    """Every analysed unit's events in ``[t0, t0 + widest window)`` up to the cut-off, each with
    its name's code, a flag per window, its calendar day (-1 before day 0), its day since
    exposure, the unit's complete days and the metrics' property columns (filters passed, value
    property). The inner fence computes the event's instant and properties once; the outer one
    computes the day indexes once per event."""
    codes = " ".join(f"WHEN {d.param(f'name{i}')} THEN {i}" for i in range(names))
    flags = "".join(f", CASE WHEN x.t < x.end_{h} THEN 1 ELSE 0 END AS in_{h}" for h in windows)
    ends = "".join(f", u.end_{h}" for h in windows)
    day0 = d.instant(d.param("day0"))
    calendar = bucket("x.t", day_bounds(d, calendar_days))
    since = exposure_bounds(d, "x.t0", exposure_days)
    through = d.instant(d.param("through"))
    carried = "".join(f", x.{c.alias}" for c in properties)
    return f""",
    joined AS {d.materialized()}(
        SELECT x.uid, x.variant_id, x.state, x.value, x.code{flags}{carried},
               CASE WHEN x.t >= {day0} THEN {calendar} ELSE -1 END AS cal_day,
               {bucket("x.t", since)} AS exp_day,
               {bucket(through, since)} AS complete
        FROM (
            SELECT u.uid, u.variant_id, u.state, u.t0{ends}, e.value,
                   CASE e.name {codes} END AS code, {d.instant("e.ts")} AS t{
        event_columns(d, properties)
    }
            FROM {_events_of_unit(d, names, windows[-1], lookup, bool(properties), unindexed)}
            {d.fence()}
        ) x
        {d.fence()}
    )"""


def day_value(d: Dialect, column: DayColumn, view: int) -> str:
    """The column's aggregate over one unit's events of one day (capped when it has a cap).
    Days since exposure count only whole days inside the window."""
    condition = f"j.code = {column.code} AND j.in_{column.window_hours} = 1"
    condition += "".join(f" AND j.{alias} = 1" for alias in column.match)
    if view == SINCE_EXPOSURE:
        condition += f" AND j.exp_day < {column.window_hours // 24}"
    if column.kind == "binomial":
        value = (
            f"CASE WHEN {d.count_if(condition)} > 0 THEN {d.double('1')} ELSE {d.double('0')} END"
        )
    elif column.kind == "count":
        value = d.double(d.count_if(condition))
    else:
        value = f"COALESCE({d.sum_if(f'j.{column.value}', condition)}, {d.double('0')})"
    if column.cap is not None:
        value = d.least(value, d.double(d.param(column.cap)))
    return f"{value} AS {column.name}"


def unit_days_cte(d: Dialect, columns: Sequence[DayColumn]) -> str:
    """One row per (view, unit, day) with events: the unit's values that day."""
    calendar = ", ".join(day_value(d, c, CALENDAR) for c in columns)
    since = ", ".join(day_value(d, c, SINCE_EXPOSURE) for c in columns)
    return f""",
    unit_days AS (
        SELECT {CALENDAR} AS view_id, j.variant_id, j.state, j.cal_day AS day_index, {calendar}
        FROM joined j WHERE j.cal_day >= 0
        GROUP BY j.uid, j.variant_id, j.state, j.cal_day
        UNION ALL
        SELECT {SINCE_EXPOSURE} AS view_id, j.variant_id, j.state, j.exp_day AS day_index, {since}
        FROM joined j WHERE j.exp_day < j.complete
        GROUP BY j.uid, j.variant_id, j.state, j.exp_day
    )"""


def day_sums(metrics: Sequence[dict[str, DayColumn]]) -> list[str]:
    """Per metric: sum and sum of squares of the value, and for ratio metrics of the
    denominator and of its product with the value (``time_aggregation._read`` order)."""
    sums = []
    for cols in metrics:
        v = cols["value"].name
        sums += [f"SUM({v})", f"SUM({v} * {v})"]
        if "denominator" in cols:
            x = cols["denominator"].name
            sums += [f"SUM({x})", f"SUM({x} * {x})", f"SUM({v} * {x})"]
    return sums


def time_views_statement(
    d: Dialect,
    windows: Sequence[int],
    metrics: Sequence[dict[str, DayColumn]],
    names: int,
    calendar_days: int,
    exposure_days: int,
    lookup: bool = False,
    properties: Sequence[EventColumn] = (),
    unindexed: bool = True,
) -> str:
    """The whole statement (``lookup``: read each unit's events by an index range scan;
    ``properties`` and ``unindexed`` as for ``builders.metrics_statement``).
    Parameters: ``experiment``, ``project``, ``since``, ``through``, ``name0`` ... (event
    names), ``day0`` ... ``day{calendar_days - 1}`` (the starts of the calendar days) and each
    column's cap. Rows: (view, variant id, day, units per window in ``windows`` order, then
    ``day_sums``)."""
    windows = sorted(windows)
    flat = [c for cols in metrics for c in cols.values()]
    sums = day_sums(metrics)
    aliased = ", ".join(f"{s} AS s{i}" for i, s in enumerate(sums))
    picked = ", ".join(f"COALESCE(s.s{i}, 0)" for i in range(len(sums)))
    units = ", ".join(f"a.n_{h}" for h in windows)
    return f"""
    WITH RECURSIVE {days_cte(max(calendar_days, exposure_days))},
    {exposed_cte(d, windows, ordered=lookup)}{spans_ctes(d, windows, calendar_days, exposure_days)}{
        joined_cte(d, windows, names, calendar_days, exposure_days, lookup, properties, unindexed)
    }{unit_days_cte(d, flat)},
    sums AS (
        SELECT view_id, variant_id, day_index, {aliased}
        FROM unit_days WHERE state = {CLEAN} GROUP BY view_id, variant_id, day_index
    )
    SELECT a.view_id, a.variant_id, a.day_index, {units}, {picked}
    FROM at_risk a
    LEFT JOIN sums s
      ON s.view_id = a.view_id AND s.variant_id = a.variant_id AND s.day_index = a.day_index
    ORDER BY a.view_id, a.day_index, a.variant_id
    """
