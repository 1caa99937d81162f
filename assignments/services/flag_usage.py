"""Flag evaluation counts (`flags.models.FlagUsage`): per flag, environment, variation and UTC
day, with the latest evaluation. ``POST /evaluate`` counts every evaluation (through the
process's buffer, `assignments.services.usage_buffer`) and stored flag exposure events count
once each (a duplicate is not counted again), in the transaction that stores them.

One set-based upsert (``INSERT ... ON CONFLICT DO UPDATE SET count = count + excluded.count``,
on PostgreSQL and SQLite alike) writes any number of counts, its rows in key order (flag,
environment, variation, day): two writers counting the same flags wait for each other in the
same order and cannot deadlock. Counts of a flag or environment deleted since they were made
are skipped, so a buffered count never fails a flush for the others.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime

from django.db import connection

from assignments.services.assignment_rows import _ROWS_PER_STATEMENT

# (flag id, variation key, UTC day) -> (evaluations, the latest of them)
UsageCounts = dict[tuple[int, str, date], tuple[int, datetime]]
# (flag id, environment id, variation key, UTC day): one usage row
UsageKey = tuple[int, int, str, date]

_UPSERT_TAIL = """
ON CONFLICT (flag_id, environment_id, variation, day) DO UPDATE
SET count = flags_flagusage.count + excluded.count,
    last_at = {latest}(flags_flagusage.last_at, excluded.last_at)
"""

# Only rows whose flag and environment exist (the WHERE also keeps SQLite's upsert parser happy).
_EXISTING = """
WHERE u.flag_id IN (SELECT id FROM flags_flag)
  AND u.environment_id IN (SELECT id FROM experiments_environment)
"""

_UPSERT_PG = (
    """
INSERT INTO flags_flagusage (flag_id, environment_id, variation, day, count, last_at)
SELECT u.flag_id, u.environment_id, u.variation, u.day, u.count, u.last_at
FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::date[], %s::bigint[],
            %s::timestamptz[]) AS u(flag_id, environment_id, variation, day, count, last_at)
"""
    + _EXISTING
    + "ORDER BY u.flag_id, u.environment_id, u.variation, u.day"
    + _UPSERT_TAIL.format(latest="greatest")
)

_UPSERT_SQLITE = """
INSERT INTO flags_flagusage (flag_id, environment_id, variation, day, count, last_at)
SELECT u.column1, u.column2, u.column3, u.column4, u.column5, u.column6
FROM (VALUES {values}) AS u
WHERE u.column1 IN (SELECT id FROM flags_flag)
  AND u.column2 IN (SELECT id FROM experiments_environment)
""" + _UPSERT_TAIL.format(latest="max")

# The same upsert fed by a set of stored flag exposures (a CTE named ``moved`` with columns
# flag_id, environment_id, variation, ts): the PostgreSQL ingestion path counts the rows its
# INSERT ... RETURNING reports as new, in the same statement.
USAGE_FROM_MOVED_PG = """
INSERT INTO flags_flagusage (flag_id, environment_id, variation, day, count, last_at)
SELECT flag_id, environment_id, variation, (ts AT TIME ZONE 'UTC')::date, count(*), max(ts)
FROM moved
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
""" + _UPSERT_TAIL.format(latest="greatest")


def usage_day(at: datetime) -> date:
    """The day an evaluation counts on: its UTC date."""
    return at.astimezone(UTC).date()


def usage_counts(rows: Iterable[tuple[int, str, datetime]]) -> UsageCounts:
    """``(flag id, variation, evaluated at)`` rows counted per flag, variation and day."""
    counts: UsageCounts = {}
    for flag_id, variation, at in rows:
        key = (flag_id, variation, usage_day(at))
        seen = counts.get(key)
        counts[key] = (1, at) if seen is None else (seen[0] + 1, max(seen[1], at))
    return counts


def flag_usage_add(
    *, environment_id: int, counts: Mapping[tuple[int, str, date], tuple[int, datetime]]
) -> None:
    """Add ``counts`` to the environment's usage rows (created on first use), in the caller's
    transaction if it has one."""
    flag_usage_upsert(
        {
            (flag_id, environment_id, variation, day): count
            for (flag_id, variation, day), count in counts.items()
        }
    )


def flag_usage_upsert(counts: Mapping[UsageKey, tuple[int, datetime]]) -> None:
    """Add ``counts`` (of any environments) to their usage rows: one statement (SQLite: one
    per 1,000 rows); counts of flags or environments that no longer exist are skipped."""
    if not counts:
        return
    keys = sorted(counts)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                _UPSERT_PG,
                [
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [k[3] for k in keys],
                    [counts[k][0] for k in keys],
                    [counts[k][1] for k in keys],
                ],
            )
            return
        ops = connection.ops
        for lo in range(0, len(keys), _ROWS_PER_STATEMENT):
            chunk = keys[lo : lo + _ROWS_PER_STATEMENT]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                _UPSERT_SQLITE.format(values=values),
                [
                    x
                    for k in chunk
                    for x in (
                        k[0],
                        k[1],
                        k[2],
                        ops.adapt_datefield_value(k[3]),
                        counts[k][0],
                        ops.adapt_datetimefield_value(counts[k][1]),
                    )
                ],
            )
