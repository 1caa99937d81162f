"""The statements of the incremental snapshot's read (analysis/incremental_read.py): the
per-variant sums of the units with rows above the watermarks, and for winsorized metrics the
highest stored values and the per-variant sums over every analysed unit. The stored rows and
the statements that write them are analysis/sql/incremental.py's; its docstring has the rules
and the parameters."""

from collections.abc import Sequence

from analysis.sql import builders
from analysis.sql.builders import CLEAN, Column
from analysis.sql.dialects import Dialect
from analysis.sql.incremental import TABLE, Stored, hot_units, sums, unit_rows_ctes
from analysis.sql.incremental_tops import TOP_TABLE, column_code


def hot_sums_sql(d: Dialect, s: Stored, lateral: bool) -> str:
    """Per (side, variant, state) the sums of the units with rows above the watermarks: side 0
    their stored rows (to take away from the kept sums), side 1 their rows computed from the
    events now (to add)."""
    return f"""
    WITH {unit_rows_ctes(d, s, hot_units(s, d), extras=False, lateral=lateral)}
    SELECT 0, variant_id, state, {", ".join(sums(s.stored_pairs()))}
    FROM {TABLE}
    WHERE experiment_id = %(experiment)s AND t0 IS NOT NULL
      AND unit_id IN (SELECT {d.binary_order("unit_id")} FROM r_units)
    GROUP BY variant_id, state
    UNION ALL
    SELECT 1, variant_id, state, {", ".join(sums(s.alias_pairs()))}
    FROM r_rows WHERE t0 IS NOT NULL
    GROUP BY variant_id, state
    """


def _clean_ctes(d: Dialect, s: Stored, slots: Sequence[int], lateral: bool) -> str:
    """CTEs ending in ``clean``: the analysed units' unit_id, variant_id and the v and x of
    ``slots``, from the stored rows, except units with rows above the watermarks, which are
    computed from their events here."""
    stored = [f"{s.read(f'{c}{i}', i)} AS {c}{i}" for i in slots for c in "vx"]
    fresh = [f"{value} AS {column}" for i in slots for column, value in _fresh(s, i).items()]
    return f"""
    {unit_rows_ctes(d, s, hot_units(s, d), extras=False, lateral=lateral)},
    clean AS {not_materialized(d)}(
        SELECT r.unit_id, r.variant_id, {", ".join(stored)}
        FROM {TABLE} r
        WHERE r.experiment_id = %(experiment)s AND r.t0 IS NOT NULL AND r.state = {CLEAN}
          AND r.unit_id NOT IN (SELECT {d.binary_order("unit_id")} FROM r_units)
        UNION ALL
        SELECT {d.binary_order("unit_id")}, variant_id, {", ".join(fresh)}
        FROM r_rows WHERE t0 IS NOT NULL AND state = {CLEAN}
    )"""


def _fresh(s: Stored, slot: int) -> dict[str, str]:
    """Per stored column of ``slot`` (``v<slot>``, ``x<slot>``), its value in r_rows (a
    per-unit alias) as the metric reads it."""
    aliases = {alias: column for column, alias in s.slot_columns()}
    return {aliases[c.name]: s.read(c.name, slot) for c in s.columns[slot].values()}


def above_sql(
    d: Dialect, s: Stored, guards: Sequence[tuple[int, str, float]], limit: int, lateral: bool
) -> str:
    """The analysed units (unit_id, variant_id, v and x of each slot of ``guards``, in that
    order) with a value at or above a guard: per (slot, "v" or "x", guard); at most ``limit``
    rows, in one scan of the rows."""
    slots = sorted({slot for slot, _, _ in guards})
    above = " OR ".join(f"{c}{i} >= {float(g)!r}" for i, c, g in guards)
    columns = ", ".join(f"v{i}, x{i}" for i in slots)
    return f"""
    WITH {_clean_ctes(d, s, slots, lateral)}
    SELECT unit_id, variant_id, {columns} FROM clean WHERE {above} LIMIT {int(limit)}
    """


def above_top_sql(
    d: Dialect, s: Stored, guards: Sequence[tuple[int, str, float]], limit: int, lateral: bool
) -> str:
    """``above_sql`` from the top units (UnitAggregateTop) alone, when every column of
    ``guards`` has a threshold at or below its guard (the table then holds every analysed
    unit with a value at or above it, with the values of its row): per slot, rows (slot,
    unit_id, variant_id, v, x), a unit once per slot; units with rows above the watermarks
    are computed from their events instead. At most ``limit`` rows."""
    parts, tops = [], []
    for i in sorted({slot for slot, _, _ in guards}):
        mine = [(c, float(g)) for slot, c, g in guards if slot == i]
        codes = ", ".join(str(column_code(i, c)) for c, _ in mine)
        tops.append(
            f"""
    top{i} AS (
        SELECT DISTINCT ON (t.unit_id) t.unit_id, t.variant_id,
               {s.read("t.v", i)} AS v, {s.read("t.x", i)} AS x
        FROM {TOP_TABLE} t
        WHERE t.experiment_id = %(experiment)s AND t.code IN ({codes})
          AND t.unit_id NOT IN (SELECT {d.binary_order("unit_id")} FROM r_units)
        ORDER BY t.unit_id, t.code
    )"""
        )
        fresh = _fresh(s, i)
        fresh_v, fresh_x = fresh[f"v{i}"], fresh[f"x{i}"]
        stored_above = " OR ".join(f"{c} >= {g!r}" for c, g in mine)
        fresh_above = " OR ".join(f"{fresh_v if c == 'v' else fresh_x} >= {g!r}" for c, g in mine)
        parts.append(
            f"SELECT {i} AS slot, unit_id, variant_id, v, x FROM top{i} WHERE {stored_above}"
        )
        parts.append(
            f"SELECT {i}, {d.binary_order('unit_id')}, variant_id, {fresh_v}, {fresh_x}"
            f" FROM r_rows WHERE t0 IS NOT NULL AND state = {CLEAN} AND ({fresh_above})"
        )
    return f"""
    WITH {unit_rows_ctes(d, s, hot_units(s, d), extras=False, lateral=lateral)},{",".join(tops)}
    {" UNION ALL ".join(parts)}
    LIMIT {int(limit)}
    """


def top_sql(d: Dialect, s: Stored, wanted: Sequence[tuple[int, str, int]], lateral: bool) -> str:
    """The analysed units with the highest values of some stored columns: per (slot, "v" or
    "x", k) of ``wanted``, k rows (index in ``wanted``, unit_id, variant_id, the slot's v and
    x) in descending order of that column (one scan of the rows each)."""
    slots = sorted({slot for slot, _, _ in wanted})
    parts = [
        f"SELECT * FROM (SELECT {n} AS q, unit_id, variant_id, v{i}, x{i} FROM clean"
        f" ORDER BY {c}{i} DESC LIMIT {int(k)}) t{n}"
        for n, (i, c, k) in enumerate(wanted)
    ]
    return f"""
    WITH {_clean_ctes(d, s, slots, lateral)}
    {" UNION ALL ".join(parts)}
    """


def read_sql(
    d: Dialect, s: Stored, slots: Sequence[int], metrics: Sequence[dict[str, Column]], lateral: bool
) -> str:
    """The per-variant sums of the metrics of ``slots`` (``metrics``: their Columns as the
    snapshot reads them, capped, with or without a covariate) over every analysed unit: the
    stored rows, except units with rows above the watermarks, which are computed from their
    events here (normally none). The result has the metrics statement's shape
    (``aggregation.read_rows``)."""
    stored = {alias: column for column, alias in s.slot_columns()}
    reads, fresh = [], []
    for slot, cols in zip(slots, metrics, strict=True):
        for c in cols.values():
            reads.append(f"{s.read(stored[c.name], slot)} AS {c.name}")
            fresh.append(f"{s.read(c.name, slot)} AS {c.name}")
    flat = [c for cols in metrics for c in cols.values()]
    finals = builders.capped_ctes(d, flat)
    return f"""
    WITH {unit_rows_ctes(d, s, hot_units(s, d), extras=False, lateral=lateral)},
    per_unit AS {not_materialized(d)}(
        SELECT variant_id, state, {", ".join(reads)}
        FROM {TABLE}
        WHERE experiment_id = %(experiment)s AND t0 IS NOT NULL
          AND unit_id NOT IN (SELECT {d.binary_order("unit_id")} FROM r_units)
        UNION ALL
        SELECT variant_id, state, {", ".join(fresh)} FROM r_rows WHERE t0 IS NOT NULL
    ){finals}
    SELECT variant_id, state, {", ".join(builders.variant_sums(metrics))}
    FROM {"capped" if finals else "per_unit"}
    GROUP BY variant_id, state
    """


def not_materialized(d: Dialect) -> str:
    """Read a CTE where it is used rather than store it first (two scans of a table are cheaper
    than writing and reading a copy), where the engine has the keyword."""
    return "NOT MATERIALIZED " if d.materialized() else ""
