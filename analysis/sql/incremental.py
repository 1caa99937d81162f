"""The statements of the incremental analysis (analysis/incremental.py): per-unit rows computed
for a set of units and stored, new events added to stored rows, the per-variant sums kept with
the rows, and the snapshot's read. The rules are the metrics statement's (analysis/aggregation.py's
docstring): the per-event window slots and per-unit values come from the same builders
(``builders.slots``, ``builders.unit_values``), and the winsorized metrics' read ends with the
same caps and per-variant sums (``builders.capped_ctes``, ``builders.variant_sums``).

Parameters: ``experiment``, ``project``, ``since``, ``through``, ``earliest`` (since minus the
widest window), ``name0``, ``name1``, ... (the event names), and the watermarks: ``x_lo``,
``x_hi`` (exposure ids) and ``e_lo``, ``e_hi`` (metric event ids), where a statement says.

A unit's stored row (``UnitAggregate``) is its ``per_unit`` row with the unit id, the first
exposure ``t0`` (NULL when the unit has exposures only after the cut-off) and ``pending``: the
earliest timestamp after the cut-off among its exposures and its events inside the widest
window. A later cut-off at or past ``pending`` recomputes the unit: such an exposure (it may
make the unit multi-variant) or event is not new, so nothing else would read it again.

Every stored column is additive, so that a new event only adds to its unit's row: a binomial
metric stores its number of events (``Stored.binary`` turns it into 0 or 1 when summed), a
count its number, a mean or a ratio's parts their sums. A row holds exactly the metric events
up to the event watermark: computed from all of the unit's events visible to the statement,
minus those above the watermark that the same statement sees (``extras``; normally none), so
the events are read from the covering index alone; they are added when the watermark passes
them.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from analysis.sql import builders
from analysis.sql.builders import CLEAN, MISMATCH, MULTI_VARIANT, Column
from analysis.sql.dialects import Dialect

TABLE = "analysis_unitaggregate"
SUMS_PER_SLOT = 7  # the order of ``sums``: v, v², x, x², v·x, v nonzero, x nonzero
ONE, ZERO = "CAST(1 AS DOUBLE PRECISION)", "CAST(0 AS DOUBLE PRECISION)"


@dataclass(frozen=True)
class Stored:
    """The stored columns of a group of metrics: ``columns[i]`` the per-unit Columns of the
    metric in slot i (value, then denominator or covariate), as ``unit_columns.metric_columns``
    names them (``m<i>_v``, ``m<i>_d``, ``m<i>_c``); ``binary[i]``: the slot holds event
    counts read as 0 or 1 (binomial); ``windows`` ascending; ``names`` how many event names."""

    columns: Sequence[dict[str, Column]]
    binary: Sequence[bool]
    windows: Sequence[int]
    names: int

    @property
    def flat(self) -> list[Column]:
        return [c for cols in self.columns for c in cols.values()]

    def slot_columns(self) -> list[tuple[str, str]]:
        """(stored column, per-unit alias) pairs: ``v<i>`` the value, ``x<i>`` the other."""
        pairs = []
        for i, cols in enumerate(self.columns):
            for role, column in cols.items():
                pairs.append((f"v{i}" if role == "value" else f"x{i}", column.name))
        return pairs

    def stored_pairs(self, before: bool = False) -> list[tuple[str, str]]:
        """Each slot's (value, other) stored columns, as the metric reads them; ``before``:
        their values before ``add_events_sql`` added ``d_v<i>``, ``d_x<i>`` (RETURNING lists
        both)."""
        return [
            tuple(  # type: ignore[misc]
                self.read(f"({c}{i} - d_{c}{i})" if before else f"{c}{i}", i) for c in "vx"
            )
            for i in range(len(self.columns))
        ]

    def alias_pairs(self) -> list[tuple[str, str]]:
        """Each slot's (value, other) per-unit aliases, as the metric reads them."""
        return [
            tuple(self.read(c.name, i) for c in cols.values())  # type: ignore[misc]
            for i, cols in enumerate(self.columns)
        ]

    def read(self, column: str, slot: int) -> str:
        """A stored column as its metric reads it: a binomial's count as 0 or 1."""
        if self.binary[slot]:
            return f"(CASE WHEN {column} > 0 THEN {ONE} ELSE {ZERO} END)"
        return column


def _row_address(d: Dialect) -> str:
    """The cheapest way back to a row just read: PostgreSQL's physical address (no index
    descent), else the primary key."""
    return "ctid" if d.vendor == "postgresql" else "id"


def _least(a: str, b: str) -> str:
    """The earlier of two nullable timestamps (NULL only when both are)."""
    return f"CASE WHEN {b} IS NULL OR {a} < {b} THEN {a} ELSE {b} END"


def _bounds(d: Dialect, s: Stored, t0: str) -> str:
    return "".join(
        f", {d.shift(t0, h)} AS end_{h}, {d.shift(t0, -h)} AS pre_{h}" for h in s.windows
    )


def _cut(d: Dialect, s: Stored, source: str, keys: str = "") -> str:
    """Rows of ``source`` (``keys``, value, t, one slot per window): the slots of events after
    the cut-off emptied, and those events' timestamps as ``late``."""
    through = d.param("through")
    slots = ", ".join(f"CASE WHEN t <= {through} THEN s{h} END AS s{h}" for h in s.windows)
    return f"SELECT {keys}value, {slots}, CASE WHEN t > {through} THEN t END AS late FROM {source}"


def _new_values(
    d: Dialect, s: Stored, name: str, units: str, ids: str, lateral: bool, keys: str = ""
) -> str:
    """CTEs ``<name>_raw`` and ``<name>``: the per-unit columns and ``late`` of the metric
    events with ids matching ``ids`` (a range of recent rows of the primary key), per unit of
    ``units`` (a CTE of unit_id, t0 and window bounds as instants) they belong to; with
    ``lateral`` (PostgreSQL; ``units`` then of the stored rows) each event's unit is looked up
    by the stored rows' index, whatever the number of units."""
    widest, t = s.windows[-1], d.instant("e.ts")
    if lateral:
        # Fenced, else the planner flattens it into a join it may hash (reading every unit).
        unit = (
            f"CROSS JOIN LATERAL (SELECT * FROM {units} u"
            f" WHERE u.unit_id = {d.binary_order('e.unit_id')} {d.fence()}) u"
        )
    else:
        unit = f"JOIN {units} u ON u.unit_id = e.unit_id"
    return f"""
    {name}_raw AS (
        SELECT {"".join(f"u.{k}, " for k in keys.split(", ") if k)}u.unit_id, e.value, e.ts AS t,
               {builders.slots(d, s.names, s.windows)}
        FROM ({_new_events(d, s, ids, lateral)}) e
        {unit}
        WHERE {t} >= u.pre_{widest} AND {t} < u.end_{widest}
        {d.fence()}
    ),
    {name} AS (
        SELECT {"".join(f"j.{k}, " for k in keys.split(", ") if k)}j.unit_id,
               {builders.unit_values(d, s.flat)}, MIN(j.late) AS late
        FROM ({_cut(d, s, f"{name}_raw", keys + "unit_id, ")}) j
        GROUP BY {"".join(f"j.{k}, " for k in keys.split(", ") if k)}j.unit_id
    )"""


def _new_events(d: Dialect, s: Stored, ids: str, ordered: bool) -> str:
    """The metric events of the project with ids matching ``ids`` (a range of the primary
    key); ``ordered``: in the stored rows' unit order (by bytes), so that looking their units
    up walks the index and the rows (stored in unit order by a rebuild) in order."""
    order = f" ORDER BY {d.binary_order('e.unit_id')} {d.fence()}" if ordered else ""
    return (
        f"SELECT e.unit_id, e.name, e.value, e.ts FROM assignments_metricevent e"
        f" WHERE e.project_id = %(project)s AND {ids}"
        f" AND e.name IN ({builders.name_list(d, s.names)}){order}"
    )


# --- per-unit rows for a set of units --------------------------------------------------------


def _exposed(d: Dialect, s: Stored, units: str) -> str:
    """r_exposed: per unit with an exposure in the phase (``units``: a condition on ``x``),
    its variant, state, first exposure (and window bounds, as instants) in [since, through],
    all NULL when it has none yet, and its first exposure after the cut-off (``later``), in one
    pass over its exposures.

    Exposures are read whatever their ids: a unit with an exposure above the watermark is
    recomputed again when the watermark passes it (recomputing is idempotent; adding an event
    twice is not)."""
    through = d.param("through")

    def before(expr: str) -> str:
        return f"CASE WHEN x.ts <= {through} THEN {expr} END"

    first = f"MIN({before('x.ts')})"
    t0 = d.instant(first)
    variants = f"MIN({before('x.variant_id')}) <> MAX({before('x.variant_id')})"
    mismatch = f"MAX(CASE WHEN x.ts <= {through} AND x.assignment_mismatch THEN 1 ELSE 0 END)"
    return f"""
    r_exposed AS (
        SELECT x.unit_id, MIN({before("x.variant_id")}) AS variant_id,
               CASE WHEN {variants} THEN {MULTI_VARIANT}
                    WHEN {mismatch} = 1 THEN {MISMATCH} ELSE {CLEAN} END AS state,
               {first} AS first_ts, MIN(CASE WHEN x.ts > {through} THEN x.ts END) AS later,
               {t0} AS t0{_bounds(d, s, t0)}
        FROM assignments_exposure x
        WHERE x.project_id = {d.param("project")} AND x.experiment_id = {d.param("experiment")}
          AND x.ts >= {d.param("since")}
          AND {units}
        GROUP BY x.unit_id
    )"""


_KEYS = "unit_id, variant_id, state, first_ts, later"


def _values_joined(d: Dialect, s: Stored) -> str:
    """r_values by one join of the units with their events in the widest window pair (any
    engine; a hash join for many units)."""
    widest, t = s.windows[-1], d.instant("e.ts")
    keys = ", ".join(f"u.{k}" for k in _KEYS.split(", "))
    return f"""
    r_raw AS (
        SELECT {keys}, e.value, e.ts AS t, {builders.slots(d, s.names, s.windows)}
        FROM r_exposed u
        LEFT JOIN assignments_metricevent e
          ON e.project_id = {d.param("project")} AND e.unit_id = u.unit_id
         AND e.name IN ({builders.name_list(d, s.names)}) AND e.ts >= {d.param("earliest")}
         AND {t} >= u.pre_{widest} AND {t} < u.end_{widest}
        {d.fence()}
    ),
    r_values AS (
        SELECT {", ".join(f"j.{k}" for k in _KEYS.split(", "))},
               {builders.unit_values(d, s.flat)}, MIN(j.late) AS late
        FROM ({_cut(d, s, "r_raw", _KEYS + ", ")}) j
        GROUP BY {", ".join(f"j.{k}" for k in _KEYS.split(", "))}
    )"""


def _values_lateral(d: Dialect, s: Stored) -> str:
    """r_values by one index lookup of each unit's events (PostgreSQL with the covering index,
    as the metrics statement's INDEX_LOOKUP)."""
    widest = s.windows[-1]
    events = f"""(
                SELECT e.value, e.ts AS t, {builders.slots(d, s.names, s.windows)}
                FROM assignments_metricevent e
                WHERE e.project_id = {d.param("project")} AND e.unit_id = u.unit_id
                  AND e.ts >= u.pre_{widest} AND e.ts < u.end_{widest}
                  AND e.name IN ({builders.name_list(d, s.names)})
                {d.fence()}
            ) z"""
    return f"""
    r_values AS (
        SELECT {", ".join(f"u.{k}" for k in _KEYS.split(", "))}, v.*
        FROM r_exposed u CROSS JOIN LATERAL (
            SELECT {builders.unit_values(d, s.flat)}, MIN(j.late) AS late
            FROM ({_cut(d, s, events)}) j
        ) v
    )"""


def unit_rows_ctes(d: Dialect, s: Stored, units: str | None, extras: bool, lateral: bool) -> str:
    """CTEs ending in r_rows: one row per unit with an exposure in the phase, as stored
    (unit_id, variant_id, state, t0, pending, the per-unit columns), for the units of
    ``units`` (a SELECT of unit ids, also named r_units) or, when None, with ids in (``lo``,
    ``hi``]. ``extras``: less the events above ``e_hi`` (a row to store); else from every
    event visible (a row read at snapshot time)."""
    if units is None:
        head, among = "", "x.unit_id > %(lo)s AND x.unit_id <= %(hi)s"
    else:
        head, among = f"r_units AS ({units}),", "x.unit_id IN (SELECT unit_id FROM r_units)"
    values = (_values_lateral if lateral else _values_joined)(d, s)
    if extras:
        values += "," + _new_values(d, s, "r_extra", "r_exposed", "e.id > %(e_hi)s", False)
        less = ", ".join(f"v.{c.name} - COALESCE(x.{c.name}, {ZERO}) AS {c.name}" for c in s.flat)
        extra_join = "LEFT JOIN r_extra x ON x.unit_id = v.unit_id"
    else:
        less, extra_join = ", ".join(f"v.{c.name}" for c in s.flat), ""
    return f"""
    {head}{_exposed(d, s, among)},{values},
    r_rows AS (
        SELECT v.unit_id, v.variant_id, v.state, v.first_ts AS t0,
               {_least("v.late", "v.later")} AS pending, {less}
        FROM r_values v {extra_join}
    )"""


def store_units_sql(d: Dialect, s: Stored, units: str | None, lateral: bool) -> tuple[str, str]:
    """(CTEs, upsert): compute the rows of ``units`` (``unit_rows_ctes``) up to the event
    watermark and write them."""
    pairs = s.slot_columns()
    stored = ", ".join(column for column, _ in pairs)
    selected = ", ".join(alias for _, alias in pairs)
    keys = ["variant_id", "state", "t0", "pending", *[column for column, _ in pairs]]
    updates = ", ".join(f"{k} = excluded.{k}" for k in keys)
    return (
        unit_rows_ctes(d, s, units, extras=True, lateral=lateral),
        f"""
    INSERT INTO {TABLE} (experiment_id, unit_id, variant_id, state, t0, pending, {stored})
    SELECT {d.param("experiment")}, unit_id, variant_id, state, t0, pending, {selected}
    FROM r_rows WHERE 1 = 1
    ON CONFLICT (experiment_id, unit_id) DO UPDATE SET {updates}""",
    )


def returned(s: Stored, added: bool = False, unit: bool = False) -> str:
    """The RETURNING list of a write: unit state and every slot column (and with ``added``,
    what ``add_events_sql`` added to them, ``d_v<i>``, ``d_x<i>``; with ``unit``, first the
    unit id)."""
    columns = [f"{TABLE}.unit_id"] if unit else []
    columns += ["variant_id", "state", "t0"]
    columns += [f"{c}{i}" for i in range(len(s.columns)) for c in ("v", "x")]
    if added:
        columns += [f"n.{alias} AS d_{column}" for column, alias in s.slot_columns()]
    return ", ".join(columns)


# --- which units ------------------------------------------------------------------------------


def all_units() -> str:
    """The units exposed in the phase (a rebuild)."""
    return (
        "SELECT DISTINCT unit_id FROM assignments_exposure WHERE project_id = %(project)s"
        " AND experiment_id = %(experiment)s AND ts >= %(since)s"
    )


def chunk_bounds_sql(size: int) -> str:
    """Every ``size``-th unit id of a rebuild, in the database's order of unit ids."""
    return f"""
    SELECT unit_id FROM (
        SELECT unit_id, ROW_NUMBER() OVER (ORDER BY unit_id) AS r FROM ({all_units()}) a
    ) n WHERE r %% {int(size)} = 0 ORDER BY unit_id
    """


def changed_units(d: Dialect) -> str:
    """Units whose stored rows must be recomputed: a new exposure in the phase (ids in
    (``x_lo``, ``x_hi``]: it may move t0 earlier or add a second variant), or a pending
    timestamp the cut-off has reached (in the event tables' collation)."""
    return f"""
        SELECT unit_id FROM assignments_exposure
        WHERE project_id = %(project)s AND experiment_id = %(experiment)s
          AND id > %(x_lo)s AND id <= %(x_hi)s
          AND ts >= %(since)s
        UNION
        SELECT {d.default_collation("unit_id")} FROM {TABLE}
        WHERE experiment_id = %(experiment)s AND pending <= %(through)s"""


def pre_start_sql(ids: str) -> str:
    """How many exposures of the experiment with ids matching ``ids`` are stamped before the
    phase start."""
    return f"""
        SELECT COUNT(*) FROM assignments_exposure
        WHERE project_id = %(project)s AND experiment_id = %(experiment)s
          AND ts < %(since)s AND {ids}"""


def hot_units(s: Stored, d: Dialect) -> str:
    """Units with rows above the watermarks: committed after the stored rows were brought up
    to date, read from the events at snapshot time."""
    return f"""
        SELECT unit_id FROM assignments_exposure
        WHERE project_id = %(project)s AND experiment_id = %(experiment)s
          AND id > %(x_hi)s AND ts >= %(since)s
        UNION
        SELECT unit_id FROM assignments_metricevent
        WHERE project_id = %(project)s AND id > %(e_hi)s
          AND name IN ({builders.name_list(d, s.names)})"""


# --- new events added to stored rows -------------------------------------------------------------


def shard_of(unit: str) -> str:
    """PostgreSQL: the shard (0 to ``shards`` - 1) of the unit id ``unit``, from a hash of its
    bytes. Only one refresh relies on it (analysis/incremental_shards.py), so a hash that
    changed with a PostgreSQL upgrade would do no harm."""
    return f"mod(hashtext({unit}) & 2147483647, %(shards)s)"


def add_events_sql(
    d: Dialect, s: Stored, lateral: bool, sharded: bool = False
) -> tuple[str, str, str]:
    """(CTEs, update, affected units): add the metric events with ids in (``e_lo``, ``e_hi``]
    to the stored rows of exposed units (the caller then recomputes the units whose t0 or
    state may have changed); an event after the cut-off only lowers ``pending``. The update's
    ``n`` holds what each row gets (for ``returned``). ``sharded`` (PostgreSQL): only the
    events of the units of shard ``shard`` of ``shards`` (``shard_of``)."""
    t0, row = d.instant("t0"), _row_address(d)
    updates = [f"pending = {_least(f'{TABLE}.pending', 'n.late')}"]
    updates += [f"{column} = {TABLE}.{column} + n.{alias}" for column, alias in s.slot_columns()]
    ids = "e.id > %(e_lo)s AND e.id <= %(e_hi)s"
    if sharded:
        ids += f" AND {shard_of('e.unit_id')} = %(shard)s"
    ctes = f"""
    a_units AS (
        SELECT {row} AS row_at, unit_id, {t0} AS t0{_bounds(d, s, t0)}
        FROM {TABLE} WHERE experiment_id = %(experiment)s AND t0 IS NOT NULL
    ),{_new_values(d, s, "a_new", "a_units", ids, lateral, keys="row_at, ")}"""
    update = f"""
    UPDATE {TABLE} SET {", ".join(updates)}
    FROM a_new n
    WHERE {TABLE}.{row} = n.row_at"""
    return ctes, update, "SELECT unit_id FROM a_new"


# --- per-variant sums --------------------------------------------------------------------------


def sums(pairs: Sequence[tuple[str, str]], old: Sequence[tuple[str, str]] = ()) -> list[str]:
    """COUNT(*), then per slot (``pairs``: each slot's value and other column) the sums of v,
    v², x, x², v·x and the numbers of rows where v and x are not 0 (a sum that must be exactly
    0 is recognized by its count); with ``old`` (the columns' values before a write), the sums
    of the differences new - old instead, and 0 for the count: what the write changed."""
    if not old:
        out = ["COUNT(*)"]
        for v, x in pairs:
            out += [f"SUM({v})", f"SUM({v} * {v})", f"SUM({x})", f"SUM({x} * {x})"]
            out += [f"SUM({v} * {x})", f"SUM({_nonzero(v)})", f"SUM({_nonzero(x)})"]
        return out
    out = ["0"]
    for (v, x), (ov, ox) in zip(pairs, old, strict=True):
        out += [
            f"SUM({v} - {ov})",
            f"SUM({v} * {v} - {ov} * {ov})",
            f"SUM({x} - {ox})",
            f"SUM({x} * {x} - {ox} * {ox})",
            f"SUM({v} * {x} - {ov} * {ox})",
            f"SUM({_nonzero(v)} - {_nonzero(ov)})",
            f"SUM({_nonzero(x)} - {_nonzero(ox)})",
        ]
    return out


def _nonzero(column: str) -> str:
    return f"(CASE WHEN {column} <> 0 THEN 1 ELSE 0 END)"


def stored_sums_sql(d: Dialect, s: Stored, units: str | None = None) -> str:
    """Per (variant, state): the sums of the stored rows of exposed units (of ``units``, a
    SELECT of unit ids named unit_id, or all)."""
    among = ""
    if units:
        among = f" AND unit_id IN (SELECT {d.binary_order('unit_id')} FROM ({units}) u)"
    return f"""
    SELECT variant_id, state, {", ".join(sums(s.stored_pairs()))}
    FROM {TABLE}
    WHERE experiment_id = %(experiment)s AND t0 IS NOT NULL{among}
    GROUP BY variant_id, state
    """


def sums_of_returned(
    ctes: str, write: str, returning: str, expressions: Sequence[str], after: str = ""
) -> str:
    """PostgreSQL: one statement that writes, then returns ``expressions`` per (variant, state)
    over the rows written of exposed units, and last how many rows those are; ``after``: more
    CTEs reading ``written`` (``keep_tops_ctes``)."""
    return f"""
    WITH {ctes},
    written AS ({write} RETURNING {returning}){after}
    SELECT variant_id, state, {", ".join(expressions)}, COUNT(*)
    FROM written WHERE t0 IS NOT NULL
    GROUP BY variant_id, state
    """
