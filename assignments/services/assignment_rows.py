"""Stored assignments by raw SQL, shared by /assign and ingestion: the look-up of the variants
units already have, and the set-based INSERT that stores new ones (racing inserts yield to the
first row)."""

from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.utils import timezone

_ROWS_PER_STATEMENT = 1000  # keeps SQLite under its bound-parameter limit

# One probe of the unique (experiment_id, unit_id) index per pair, whatever the statistics say:
# with both columns as IN-lists the planner, misled by a young experiment's stale row count,
# scanned every assignment of the experiment instead (6x slower at 200,000 rows).
_STORED_ASSIGNMENTS_PG = """
SELECT e.id, u.unit_id, a.variant_id
FROM unnest(%b::bigint[]) AS e(id)
CROSS JOIN unnest(%b::text[]) AS u(unit_id)
CROSS JOIN LATERAL (
    SELECT variant_id FROM assignments_assignment a
    WHERE a.experiment_id = e.id AND a.unit_id = u.unit_id
    LIMIT 1
) a
"""


def _assignment_rows(
    experiment_ids: Sequence[int], unit_ids: Sequence[str]
) -> list[tuple[int, str, int]]:
    """``(experiment_id, unit_id, variant_id)`` of the stored assignments of these units."""
    if connection.vendor == "postgresql":
        with _bound_cursor() as cursor:
            cursor.execute(_STORED_ASSIGNMENTS_PG, [list(experiment_ids), list(unit_ids)])
            return cursor.fetchall()
    rows: list[tuple[int, str, int]] = []
    experiments = ", ".join(["%s"] * len(experiment_ids))
    with connection.cursor() as cursor:
        for lo in range(0, len(unit_ids), _ROWS_PER_STATEMENT):
            chunk = list(unit_ids[lo : lo + _ROWS_PER_STATEMENT])
            cursor.execute(
                "SELECT experiment_id, unit_id, variant_id FROM assignments_assignment "
                f"WHERE experiment_id IN ({experiments}) "
                f"AND unit_id IN ({', '.join(['%s'] * len(chunk))})",
                [*experiment_ids, *chunk],
            )
            rows += cursor.fetchall()
    return rows


_INSERT_ASSIGNMENTS_PG = """
INSERT INTO assignments_assignment (experiment_id, unit_id, variant_id, phase, assigned_at)
SELECT e, u, v, p, %s FROM unnest(%b::bigint[], %b::text[], %b::bigint[], %b::integer[])
    AS r(e, u, v, p)
ORDER BY e, u COLLATE "C"
ON CONFLICT (experiment_id, unit_id) DO NOTHING
RETURNING experiment_id, unit_id
"""


def _assignments_insert(values: Sequence[tuple[int, str, int, int]]) -> set[tuple[int, str]]:
    """Insert ``(experiment_id, unit_id, variant_id, phase)`` rows unless the unit is already
    assigned; return the ``(experiment_id, unit_id)`` pairs inserted.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (PostgreSQL, SQLite >= 3.35): a concurrent
    insert of the same unit waits for the other transaction and then yields to it, so the unique
    (experiment, unit_id) row decides every race. Rows go in key order, like ingestion's, so
    overlapping concurrent inserts cannot deadlock. On PostgreSQL the rows travel as four bound
    arrays in binary format (one statement, prepared after a few calls).
    """
    if not values:
        return set()
    now = timezone.now()
    if connection.vendor == "postgresql":
        columns = [list(column) for column in zip(*values, strict=True)]
        with _bound_cursor() as cursor:
            cursor.execute(_INSERT_ASSIGNMENTS_PG, [now, *columns])
            return set(cursor.fetchall())
    assigned_at = connection.ops.adapt_datetimefield_value(now)
    inserted: set[tuple[int, str]] = set()
    with connection.cursor() as cursor:
        for lo in range(0, len(values), _ROWS_PER_STATEMENT):
            chunk = values[lo : lo + _ROWS_PER_STATEMENT]
            placeholders = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                "INSERT INTO assignments_assignment "
                "(experiment_id, unit_id, variant_id, phase, assigned_at) "
                f"VALUES {placeholders} "
                "ON CONFLICT (experiment_id, unit_id) DO NOTHING "
                "RETURNING experiment_id, unit_id",
                [x for row in chunk for x in (*row, assigned_at)],
            )
            inserted.update((e, u) for e, u in cursor.fetchall())
    return inserted


def _bound_cursor() -> Any:
    """A psycopg cursor with server-side parameter binding on Django's connection.

    Django's own cursors bind parameters client-side, which means quoting every element of a
    large list in Python; bound arrays skip that. Same connection, so same transaction.
    """
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)
