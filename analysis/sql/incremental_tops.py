"""The statements that keep the top units of winsorized columns (``UnitAggregateTop``;
analysis/incremental_tops.py sets their thresholds): every write of the stored rows
(analysis/sql/incremental.py) keeps the table true in the same statement, and a threshold set
anew finds its units with one scan of the rows. A column is named by its code: 2 * slot, plus 1
for the ``x`` column."""

from analysis.sql.builders import CLEAN
from analysis.sql.incremental import TABLE, Stored

TOP_TABLE = "analysis_unitaggregatetop"


def column_code(slot: int, column: str) -> int:
    """UnitAggregateTop's code of a slot's stored column ("v" or "x")."""
    return 2 * slot + (1 if column == "x" else 0)


def _column(code: int) -> str:
    """The stored column of a UnitAggregateTop code (``column_code``'s inverse)."""
    slot, x = divmod(code, 2)
    return f"{'vx'[x]}{slot}"


def _coded(s: Stored, code: int, expression: str | None = None) -> str:
    """A coded column as its metric reads it (``expression``: another expression of it)."""
    return s.read(expression or _column(code), code // 2)


def keep_tops_ctes(s: Stored, thresholds: dict[int, float], before_known: bool) -> str:
    """CTEs that keep UnitAggregateTop true for the rows of ``written`` (a write's RETURNING,
    ``returned(unit=True)``): per coded column and its threshold, the analysed units whose value
    is at or above it are added with their variant and slot's values, or have them updated;
    those that no longer qualify are removed. ``before_known``: the RETURNING has what the
    write added (``d_<column>``; the write changed no unit's t0 or state), so only the units
    whose value was at or near the threshold are looked at for removal. The two sets are
    disjoint (one statement must not delete and insert the same row). The leaving units are a
    distinct set of their own: as a semi-join of the top units with ``written``, a planner
    without statistics of the top units (1 row estimated) chose to scan ``written`` once per
    top unit, minutes at 13,000 top units and 85,000 written rows."""
    out = []
    for code, threshold in sorted(thresholds.items()):
        column, slot, t = _column(code), code // 2, float(threshold)
        kept = f"({_coded(s, code)} >= {t!r} AND t0 IS NOT NULL AND state = {CLEAN}) IS TRUE"
        if before_known:
            # The value before the write, as new - added, is off by a rounding error of at most
            # a few units in the last place of |new| + |added|: a unit that was at the threshold
            # must not be missed (its entry would keep stale values), so the test is wider.
            margin = f"1e-9 * ({abs(t)!r} + ABS(d_{column}))"
            was = f"({_coded(s, code, f'({column} - d_{column})')} >= {t!r} - {margin}) IS TRUE"
            leaves = f"NOT {kept} AND {was}"
        else:
            leaves = f"NOT {kept}"
        out.append(
            f"""
    top_in{code} AS (
        INSERT INTO {TOP_TABLE} (experiment_id, code, unit_id, variant_id, v, x)
        SELECT %(experiment)s, {code}, unit_id, variant_id, v{slot}, x{slot}
        FROM written WHERE {kept}
        ON CONFLICT (experiment_id, code, unit_id) DO UPDATE
        SET variant_id = excluded.variant_id, v = excluded.v, x = excluded.x
    ),
    top_out{code} AS (
        DELETE FROM {TOP_TABLE} t
        USING (SELECT DISTINCT unit_id FROM written WHERE {leaves}) w
        WHERE t.experiment_id = %(experiment)s AND t.code = {code} AND t.unit_id = w.unit_id
    )"""
        )
    return "".join("," + cte for cte in out)


def forget_top_sql(code: int) -> str:
    """The statement that empties a coded column's top units."""
    return f"DELETE FROM {TOP_TABLE} WHERE experiment_id = %(experiment)s AND code = {int(code)}"


def reset_top_sql(s: Stored, code: int) -> list[str]:
    """The statements that set a coded column's top units anew for the threshold
    ``%(threshold)s`` (one scan of the rows)."""
    slot = int(code) // 2
    return [
        forget_top_sql(code),
        f"""
        INSERT INTO {TOP_TABLE} (experiment_id, code, unit_id, variant_id, v, x)
        SELECT %(experiment)s, {int(code)}, unit_id, variant_id, v{slot}, x{slot} FROM {TABLE}
        WHERE experiment_id = %(experiment)s AND {_coded(s, code)} >= %(threshold)s
          AND t0 IS NOT NULL AND state = {CLEAN}""",
    ]
