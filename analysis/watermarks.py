"""Safe watermarks on the event tables' ids: an id below which no event can still appear.

The incremental analysis (analysis/incremental.py) adds each metric event to the stored
per-unit rows exactly once, by id: the events with ids in (old watermark, new watermark]. That
is exact only if no event with an id at or below the new watermark commits later. Ids are handed
out when a row is inserted, not when its transaction commits, so under concurrent ingestion an
event with a lower id can commit after one with a higher id: reading "everything up to the
highest id visible" could skip it for good.

SQLite: one writer at a time holds the database's write lock from its first insert until its
commit, so rows commit in id order: the highest id visible is safe at once.

PostgreSQL: a transaction that inserts into a table holds a RowExclusiveLock on it from before
its first row gets an id until it ends. A candidate is (the highest ids visible, then the
transactions holding a write lock on either event table, read from ``pg_locks`` afterwards).
Proof that it is safe once those transactions have ended: an uncommitted row with an id at or
below the candidate's got its id before the row with the highest id did (a sequence hands out
increasing values), so before that row committed, so before the candidate's ids were read; its
transaction took the table lock before that and holds it until it ends, so it was among the
writers read after. When none of them runs any more, every row at or below the candidate has
committed or is gone, and a statement started after that sees all of them. A transaction that
only reads holds no such lock and never delays a candidate; a writer that started after the
candidate's ids were read can only get higher ids. (Rows inserted with explicit ids, e.g. a
restore, are not covered: rebuild the aggregates after one, docs/operations.md.)

``advance`` waits a little (``ABACUS_AGGREGATES_WAIT_SECONDS``) for the writers of a fresh
candidate, normally ingestion batches that commit within milliseconds; if some are still
running it keeps the candidate for a later snapshot and uses the newest earlier candidate whose
writers have all ended. Events above the watermark are never lost: the snapshot reads them from
the events table (analysis/sql/incremental.py ``hot_units``) until the watermark passes them.
"""

import time
from dataclasses import dataclass
from typing import Any

MAX_CANDIDATES = 20  # kept for later snapshots while their writers run; older ones are dropped
POLL_SECONDS = 0.01

_MAX_IDS = (
    "SELECT (SELECT COALESCE(MAX(id), 0) FROM assignments_exposure), "
    "(SELECT COALESCE(MAX(id), 0) FROM assignments_metricevent)"
)
# The transactions (other than this one) holding or awaiting a write lock on an event table.
_WRITERS = """
SELECT DISTINCT virtualtransaction FROM pg_locks
WHERE locktype = 'relation'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation IN ('assignments_exposure'::regclass, 'assignments_metricevent'::regclass)
  AND mode NOT IN ('AccessShareLock', 'RowShareLock')
  AND pid <> pg_backend_pid()
"""
# Which of those transactions still run: each holds the lock on its own virtual transaction id.
_RUNNING = """
SELECT virtualxid FROM pg_locks
WHERE locktype = 'virtualxid' AND virtualxid = ANY(%s::text[])
"""


@dataclass(frozen=True)
class Watermark:
    exposure: int = 0
    event: int = 0

    def at_least(self, other: "Watermark") -> "Watermark":
        """Each table's higher id: both are safe, so is the higher."""
        return Watermark(max(self.exposure, other.exposure), max(self.event, other.event))

    def covers(self, other: "Watermark") -> bool:
        return self.exposure >= other.exposure and self.event >= other.event


def advance(
    connection: Any, current: Watermark, candidates: list[dict], wait_seconds: float
) -> tuple[Watermark, list[dict]]:
    """The highest safe watermark now (never below ``current``) and the candidates to keep for
    later (as stored in ``AggregateState.candidates``). Must run outside a transaction's
    snapshot (PostgreSQL READ COMMITTED: each statement after this one sees every row the
    watermark covers)."""
    with connection.cursor() as cursor:
        cursor.execute(_MAX_IDS)
        exposure, event = cursor.fetchone()
        fresh = Watermark(int(exposure), int(event))
        if connection.vendor != "postgresql":
            return current.at_least(fresh), []
        cursor.execute(_WRITERS)
        writers = [row[0] for row in cursor.fetchall()]
        if _wait(cursor, writers, wait_seconds):
            return current.at_least(fresh), []
        safe, kept = current, []
        for candidate in candidates:
            mark = Watermark(candidate["exposure"], candidate["event"])
            if safe.covers(mark):
                continue
            if _running(cursor, candidate["writers"]):
                kept.append(candidate)
            else:
                safe = safe.at_least(mark)
        kept = [c for c in kept if not safe.covers(Watermark(c["exposure"], c["event"]))]
        kept.append({"exposure": fresh.exposure, "event": fresh.event, "writers": writers})
        return safe, kept[-MAX_CANDIDATES:]


def _running(cursor: Any, writers: list[str]) -> bool:
    if not writers:
        return False
    cursor.execute(_RUNNING, [writers])
    return cursor.fetchone() is not None


def _wait(cursor: Any, writers: list[str], seconds: float) -> bool:
    """Whether every one of ``writers`` has ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while _running(cursor, writers):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
