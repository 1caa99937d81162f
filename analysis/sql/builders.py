"""The metrics statement, one builder per CTE or clause; every engine difference is a dialect call.

The statement (the rules are in ``analysis/aggregation.py``'s docstring)::

    WITH exposed AS (...)          one row per unit in the window: variant, state, t0, windows
         [joined AS (...)]         hash join: each unit with its events, tagged by slot
         per_unit AS (...)         one row per unit: its metric columns
         [caps AS (...),           winsorization: each capped column's quantile
          capped AS (...)]         and the columns capped at it
    SELECT variant_id, state, n, sums...   a few rows: per variant and unit state

Builders take the dialect ``d`` (``analysis/sql/dialects.py``) and return SQL text. Values are
bound parameters (``d.param``); the only literals are identifiers and integers or floats the
caller generated or checked (column aliases, event-name codes, window hours, quantiles).

Metrics from event properties add per-event columns (``EventColumn``: whether the event passes a
metric's filters, or its value property's number), written by ``analysis/sql/properties.py``
with their values bound, and computed with the other per-event columns. The index lookup then
reads each unit's events through the indexes that also hold their properties
(``Dialect.property_events``).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

from analysis.sql.dialects import Dialect

HASH_JOIN = "hash_join"  # any schema: one hash join of units and events, then a hash aggregate
INDEX_LOOKUP = "index_lookup"  # PostgreSQL with COVERING_INDEX: per-unit index-only lookups

# A unit's state in the window: analysed, or left out for one of two reasons.
CLEAN, MULTI_VARIANT, MISMATCH = 0, 1, 2

_MISMATCH = "MAX(CASE WHEN assignment_mismatch THEN 1 ELSE 0 END)"

# Where the units come from: an experiment's exposures, or (`units_from`) another relation with
# the columns exposed_cte reads, e.g. a holdout's exposures with the two arms as variants
# (analysis/holdouts.py; they have no attributes, so no breakdown).
EXPERIMENT_EXPOSURES = "assignments_exposure"
HOLDOUT_EXPOSURES = (
    "(SELECT id, holdout_id AS experiment_id, arm AS variant_id, unit_id, ts,"
    " FALSE AS assignment_mismatch FROM assignments_holdoutexposure)"
)
_units: ContextVar[str] = ContextVar("units", default=EXPERIMENT_EXPOSURES)


def of_project(d: Dialect, alias: str = "") -> str:
    """The condition that keeps a read of the experiments' exposures in the experiment's
    project: on PostgreSQL the partitioned table (assignments/partitions.py) is then planned
    over that project's partitions only. Other unit relations (a holdout's) have no project."""
    if _units.get() != EXPERIMENT_EXPOSURES:
        return ""
    return f"{alias}project_id = {d.param('project')} AND "


@contextmanager
def units_from(relation: str) -> Iterator[None]:
    """Statements built inside read their units from ``relation`` (one of the constants above)
    instead of the experiments' exposures; ``experiment`` then binds that relation's key."""
    token = _units.set(relation)
    try:
        yield
    finally:
        _units.reset(token)


@dataclass(frozen=True)
class Column:
    """One per-unit column of a metric, as an aggregate over the unit's joined events."""

    name: str  # SQL alias in per_unit
    kind: str  # binomial (0/1: any event) | count (events) | anything else (sum of values)
    code: int  # the event name's code (its position among the statement's names)
    window_hours: int
    pre: bool  # the pre-exposure window (CUPED covariate) rather than the window after t0
    cap_quantile: float | None
    match: tuple[str, ...] = ()  # the EventColumns (kind "match") the event must pass: filters
    value: str = "value"  # what a sum adds per event: its value, or an EventColumn ("number")


@dataclass(frozen=True)
class EventColumn:
    """A per-event column from the event's properties, computed for the events of one name
    (code); the others get 0 (match) or NULL (number)."""

    alias: str
    kind: str  # "match": 1 when the event passes ``sql`` (a predicate), else 0 | "number"
    sql: str  # over ``e.properties``, every value bound (analysis/sql/properties.py)
    code: int


def event_column(d: Dialect, column: EventColumn) -> str:
    """The column's expression over a joined event ``e``, guarded by the event name so that
    only that name's events have their properties parsed."""
    name = d.param(f"name{column.code}")
    if column.kind == "match":
        return (
            f"CASE WHEN e.name = {name} THEN CASE WHEN ({column.sql}) THEN 1 ELSE 0 END ELSE 0 END"
            f" AS {column.alias}"
        )
    return f"CASE WHEN e.name = {name} THEN {column.sql} END AS {column.alias}"


def event_columns(d: Dialect, columns: Sequence[EventColumn]) -> str:
    return "".join(f", {event_column(d, c)}" for c in columns)


def exposed_cte(
    d: Dialect, windows: Sequence[int] = (), ordered: bool = False, level: bool = False
) -> str:
    """Per unit in the window: an integer key (its first exposure row's id), variant, state,
    first exposure t0 and the bounds of each metric window, computed once per unit here rather
    than once per joined event; with ``level``, the value of the attribute ``dimension`` on the
    unit's first exposure in the window (earliest ts, then lowest id), NULL when that exposure
    has no such scalar attribute.

    Multi-variant units are dropped only after the events are joined: a filter here would make
    PostgreSQL expect a handful of units (it cannot estimate a HAVING on aggregates) and pick a
    nested loop over millions of events."""
    t0 = d.instant("MIN(ts)")
    bounds = "".join(
        f", {d.shift(t0, h)} AS end_{h}, {d.shift(t0, -h)} AS pre_{h}" for h in windows
    )
    experiment, since, through = d.param("experiment"), d.param("since"), d.param("through")
    # The level: one probe of the (experiment_id, unit_id, ts) index per unit.
    first_level = (
        f""",
               (SELECT {d.attribute_level("f.attributes", d.param("dimension"))}
                FROM {_units.get()} f
                WHERE {of_project(d, "f.")}f.experiment_id = {experiment}
                  AND f.unit_id = x.unit_id
                  AND f.ts >= {since} AND f.ts <= {through}
                ORDER BY f.ts, f.id LIMIT 1) AS level"""
        if level
        else ""
    )
    return f"""
    exposed AS (
        SELECT unit_id, MIN(id) AS uid, MIN(variant_id) AS variant_id,
               CASE WHEN MIN(variant_id) <> MAX(variant_id) THEN {MULTI_VARIANT}
                    WHEN {_MISMATCH} = 1 THEN {MISMATCH} ELSE {CLEAN} END AS state,
               {t0} AS t0{bounds}{first_level}
        FROM {_units.get()} x
        WHERE {of_project(d)}experiment_id = {experiment} AND ts >= {since} AND ts <= {through}
        GROUP BY unit_id{" ORDER BY unit_id" if ordered else ""}
    )"""


def unit_keys(alias: str, level: bool = False) -> str:
    """What each per-unit row carries besides its metric columns: variant and state, and with a
    breakdown the unit's level."""
    return f"{alias}.variant_id, {alias}.state" + (f", {alias}.level" if level else "")


def exposure_counts_sql(d: Dialect) -> str:
    """Units per (variant, state) in the window."""
    return f"""
    WITH {exposed_cte(d)}
    SELECT variant_id, state, COUNT(*) FROM exposed GROUP BY variant_id, state
    """


# --- per unit -----------------------------------------------------------------------------------


def slot(d: Dialect, names: int, window_hours: int, widest: bool) -> str:
    """Per joined event and window: 2 k + 1 inside the window, 2 k + 2 inside the pre-exposure
    window (k = the event name's code), NULL otherwise. The join already keeps only events
    inside the widest window pair, so for that one the side of t0 is enough."""
    t = d.instant("e.ts")
    code = "CASE e.name " + " ".join(
        f"WHEN {d.param(f'name{i}')} THEN {2 * i}" for i in range(names)
    )
    if widest:
        side = f"CASE WHEN {t} >= u.t0 THEN 1 ELSE 2 END"
    else:
        h = window_hours
        side = (
            f"CASE WHEN {t} >= u.t0 AND {t} < u.end_{h} THEN 1"
            f" WHEN {t} < u.t0 AND {t} >= u.pre_{h} THEN 2 END"
        )
    return f"({code} END) + ({side}) AS s{window_hours}"


def slots(d: Dialect, names: int, windows: Sequence[int]) -> str:
    return ", ".join(slot(d, names, h, h == windows[-1]) for h in windows)


def name_list(d: Dialect, names: int) -> str:
    return ", ".join(d.param(f"name{i}") for i in range(names))


def unit_value(d: Dialect, column: Column) -> str:
    """The column's aggregate over one unit's joined events: the event is of the column's name
    and inside its window, one integer comparison on the slot."""
    condition = f"j.s{column.window_hours} = {2 * column.code + (2 if column.pre else 1)}"
    condition += "".join(f" AND j.{alias} = 1" for alias in column.match)
    if column.kind == "binomial":
        return (
            f"CASE WHEN {d.count_if(condition)} > 0 THEN {d.double('1')} ELSE {d.double('0')} END"
        )
    if column.kind == "count":
        return d.double(d.count_if(condition))
    return f"COALESCE({d.sum_if(f'j.{column.value}', condition)}, {d.double('0')})"


def unit_values(d: Dialect, columns: Sequence[Column]) -> str:
    return ",\n               ".join(f"{unit_value(d, c)} AS {c.name}" for c in columns)


def hash_join_ctes(
    d: Dialect,
    windows: Sequence[int],
    columns: Sequence[Column],
    names: int,
    properties: Sequence[EventColumn] = (),
    level: bool = False,
) -> str:
    """exposed, joined (every unit LEFT JOIN its events in the widest window pair, with the
    property columns) and per_unit (a hash aggregate by unit)."""
    t, widest, project, in_names = (
        d.instant("e.ts"),
        windows[-1],
        d.param("project"),
        name_list(d, names),
    )
    return f"""
    WITH {exposed_cte(d, windows, level=level)},
    joined AS (
        SELECT u.uid, {unit_keys("u", level)}, e.value, {slots(d, names, windows)}{
        event_columns(d, properties)
    }
        FROM exposed u
        LEFT JOIN assignments_metricevent e
          ON e.project_id = {project} AND e.name IN ({in_names}) AND e.unit_id = u.unit_id
         AND e.ts >= {d.param("earliest")} AND e.ts <= {d.param("through")}
         AND {t} >= u.pre_{widest} AND {t} < u.end_{widest}
        {d.fence()}
    ),
    per_unit AS {d.materialized()}(
        SELECT {unit_keys("j", level)},
               {unit_values(d, columns)}
        FROM joined j
        GROUP BY j.uid, {unit_keys("j", level)}
    )"""


def index_lookup_ctes(
    d: Dialect,
    windows: Sequence[int],
    columns: Sequence[Column],
    names: int,
    properties: Sequence[EventColumn] = (),
    level: bool = False,
    unindexed: bool = True,
) -> str:
    """exposed in unit_id order, and per_unit: each unit's events read from the covering index
    by a LATERAL subquery. The probes walk the index in order, and the aggregate over one unit's
    few events is one row. When some column reads properties, the unit's events come from the
    indexes that also hold them (``d.property_events``): still one lookup per unit, every
    column from it, and no table row fetched for events whose properties the index holds."""
    widest = windows[-1]
    where = f"""e.project_id = {d.param("project")} AND e.unit_id = u.unit_id
                  AND e.ts >= u.pre_{widest} AND e.ts < u.end_{widest}
                  AND e.ts <= {d.param("through")} AND e.name IN ({name_list(d, names)})"""
    if properties:
        source = d.property_events("e.name, e.value, e.ts, e.properties", where, unindexed)
        events = f"{source} e"
    else:
        events = f"assignments_metricevent e\n                WHERE {where}"
    return f"""
    WITH {exposed_cte(d, windows, ordered=True, level=level)},
    per_unit AS {d.materialized()}(
        SELECT {unit_keys("u", level)}, s.*
        FROM exposed u CROSS JOIN LATERAL (
            SELECT {unit_values(d, columns)}
            FROM (
                SELECT e.value, {slots(d, names, windows)}{event_columns(d, properties)}
                FROM {events}
                {d.fence()}
            ) j
        ) s
    )"""


# --- winsorization and the per-variant sums -----------------------------------------------------


def capped_ctes(d: Dialect, columns: Sequence[Column], level: bool = False) -> str:
    """caps (each capped column's quantile over the analysed units) and capped (every column,
    the capped ones at their cap, and the caps themselves); empty when nothing is capped."""
    capped = [c for c in columns if c.cap_quantile is not None]
    if not capped:
        return ""
    caps = d.quantiles(
        [(c.name, float(c.cap_quantile)) for c in capped],  # type: ignore[arg-type]
        source="per_unit",
        where=f"state = {CLEAN}",
    )
    selected = ", ".join(
        f"{d.least(f'p.{c.name}', f'COALESCE(caps.cap_{c.name}, p.{c.name})')} AS {c.name}"
        if c.cap_quantile is not None
        else f"p.{c.name}"
        for c in columns
    )
    cap_values = ", ".join(f"caps.cap_{c.name}" for c in capped)
    return f""",
    caps AS ({caps}),
    capped AS (
        SELECT {unit_keys("p", level)}, {selected}, {cap_values}
        FROM per_unit p CROSS JOIN caps
    )"""


def variant_sums(metrics: Sequence[dict[str, Column]]) -> list[str]:
    """COUNT(*), then per metric: sum and sum of squares of the value, of the denominator or
    covariate and of its product with the value, and the caps used (``_read_rows`` order)."""
    sums = ["COUNT(*)"]
    for cols in metrics:
        v = cols["value"].name
        sums += [f"COALESCE(SUM({v}), 0)", f"COALESCE(SUM({v} * {v}), 0)"]
        for role in ("denominator", "covariate"):
            if role in cols:
                x = cols[role].name
                sums += [
                    f"COALESCE(SUM({x}), 0)",
                    f"COALESCE(SUM({x} * {x}), 0)",
                    f"COALESCE(SUM({v} * {x}), 0)",
                ]
        sums += [f"MAX(cap_{c.name})" for c in cols.values() if c.cap_quantile is not None]
    return sums


def metrics_statement(
    d: Dialect,
    windows: Sequence[int],
    metrics: Sequence[dict[str, Column]],
    names: int,
    strategy: str = HASH_JOIN,
    properties: Sequence[EventColumn] = (),
    levels: int | None = None,
    unindexed: bool = True,
) -> str:
    """The whole statement for a group of metrics: ``windows`` are their distinct window hours,
    ascending; ``metrics`` their columns by role; ``names`` how many event names are bound
    (``name0``, ``name1``, ...; with ``experiment``, ``project``, ``since``, ``through`` and
    ``earliest``, the earliest pre-exposure bound); ``properties`` the per-event columns the
    metrics' filters and value properties read (their parameters bound by the caller), and
    ``unindexed`` whether the project has events whose properties no index holds
    (``Dialect.unindexed_properties``).

    ``levels``: a breakdown by the attribute bound as ``dimension``, its ``levels`` most common
    values kept (``breakdown_select``); the winsorization caps stay those of all units."""
    windows = sorted(windows)
    flat = [c for cols in metrics for c in cols.values()]
    units = (
        partial(index_lookup_ctes, unindexed=unindexed)
        if strategy == INDEX_LOOKUP
        else hash_join_ctes
    )
    level = levels is not None
    finals = capped_ctes(d, flat, level)
    source = "capped" if finals else "per_unit"
    head = f"{units(d, windows, flat, names, properties, level)}{finals}"
    if level:
        return head + breakdown_select(d, source, variant_sums(metrics), levels)
    return f"""{head}
    SELECT variant_id, state, {", ".join(variant_sums(metrics))}
    FROM {source}
    GROUP BY variant_id, state
    """


# --- breakdowns by a unit attribute -------------------------------------------------------------

# Which rows a level holds: one of the kept values, every other value, or no value.
LEVEL_VALUE, LEVEL_OTHER, LEVEL_NONE = 0, 1, 2


def breakdown_select(d: Dialect, source: str, sums: Sequence[str], levels: int) -> str:
    """The end of a breakdown statement (after the CTEs of ``exposed`` with its ``level`` and
    of ``source``, one row per unit): top_levels, the ``levels`` values with the most analysed
    units (ties by the value's bytes), and the sums per (bucket, kept value, variant, state).
    Rows of the kept values carry their value; the others are grouped as LEVEL_OTHER (another
    value) and LEVEL_NONE (no value)."""
    return f""",
    top_levels AS (
        SELECT level FROM exposed WHERE state = {CLEAN} AND level IS NOT NULL
        GROUP BY level ORDER BY COUNT(*) DESC, {d.binary_order("level")} LIMIT {int(levels)}
    ),
    leveled AS (
        SELECT s.*,
               CASE WHEN s.level IS NULL THEN {LEVEL_NONE}
                    WHEN s.level IN (SELECT level FROM top_levels) THEN {LEVEL_VALUE}
                    ELSE {LEVEL_OTHER} END AS bucket
        FROM {source} s
    )
    SELECT bucket, CASE WHEN bucket = {LEVEL_VALUE} THEN level END AS level_value,
           variant_id, state, {", ".join(sums)}
    FROM leveled
    GROUP BY bucket, CASE WHEN bucket = {LEVEL_VALUE} THEN level END, variant_id, state
    """


def breakdown_counts_sql(d: Dialect, levels: int) -> str:
    """Units per (bucket, kept value, variant, state) of a breakdown without metrics."""
    return f"""
    WITH {exposed_cte(d, level=True)}{breakdown_select(d, "exposed", ["COUNT(*)"], levels)}"""
