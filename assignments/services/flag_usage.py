"""Flag evaluation counts (`flags.models.FlagUsage`): per flag, environment, variation and UTC
day, with the latest evaluation. ``POST /evaluate`` counts every evaluation and stored flag
exposure events count once each (a duplicate is not counted again).

One set-based upsert per request (``INSERT ... ON CONFLICT DO UPDATE SET count = count +
excluded.count``, on PostgreSQL and SQLite alike), its rows in key order: two requests counting
the same flags wait for each other in the same order and cannot deadlock.

Every untracked ``/evaluate`` of an environment updates the same rows (one per flag served),
so requests queue on those rows' locks for as long as each takes to commit; on PostgreSQL that
is the wait for the WAL flush. Those commits skip the wait (``synchronous_commit = off`` for
that transaction only), so the locks are held for the statement, not the disk. A database crash
may then lose the last fraction of a second of counts, never corrupt them; exposures and
everything else stay durable. (On the benchmark machine's fast local disk the two cost the same
per request, 0.65 to 0.87 ms; the difference is the flush time of slower storage.)
"""

from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from datetime import UTC, date, datetime

from django.db import connection, transaction

from assignments.services.assignment_rows import _ROWS_PER_STATEMENT

# (flag id, variation key, UTC day) -> (evaluations, the latest of them)
UsageCounts = dict[tuple[int, str, date], tuple[int, datetime]]

_UPSERT_TAIL = """
ON CONFLICT (flag_id, environment_id, variation, day) DO UPDATE
SET count = flags_flagusage.count + excluded.count,
    last_at = {latest}(flags_flagusage.last_at, excluded.last_at)
"""

_UPSERT_PG = """
INSERT INTO flags_flagusage (flag_id, environment_id, variation, day, count, last_at)
SELECT u.flag_id, %s, u.variation, u.day, u.count, u.last_at
FROM unnest(%s::bigint[], %s::varchar[], %s::date[], %s::bigint[], %s::timestamptz[])
     AS u(flag_id, variation, day, count, last_at)
ORDER BY u.flag_id, u.variation, u.day
""" + _UPSERT_TAIL.format(latest="greatest")

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
    *,
    environment_id: int,
    counts: Mapping[tuple[int, str, date], tuple],
    wait_for_disk: bool = True,
) -> None:
    """Add ``counts`` to the environment's usage rows (created on first use): one statement
    (SQLite: one per 1,000 rows). ``wait_for_disk=False``: on PostgreSQL, its own transaction
    commits without waiting for the disk (see the module docstring)."""
    if not counts:
        return
    keys = sorted(counts)
    if connection.vendor == "postgresql":
        # Only a transaction of its own: a caller's would commit its other writes unwaited too.
        quick = not wait_for_disk and not connection.in_atomic_block
        with transaction.atomic() if quick else nullcontext(), connection.cursor() as cursor:
            cursor.execute(
                ("SET LOCAL synchronous_commit TO OFF; " if quick else "") + _UPSERT_PG,
                [
                    environment_id,
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [counts[k][0] for k in keys],
                    [counts[k][1] for k in keys],
                ],
            )
        return
    ops = connection.ops
    with connection.cursor() as cursor:
        for lo in range(0, len(keys), _ROWS_PER_STATEMENT):
            chunk = keys[lo : lo + _ROWS_PER_STATEMENT]
            cursor.execute(
                "INSERT INTO flags_flagusage "
                "(flag_id, environment_id, variation, day, count, last_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
                + _UPSERT_TAIL.format(latest="max"),
                [
                    x
                    for k in chunk
                    for x in (
                        k[0],
                        environment_id,
                        k[1],
                        ops.adapt_datefield_value(k[2]),
                        counts[k][0],
                        ops.adapt_datetimefield_value(counts[k][1]),
                    )
                ],
            )
