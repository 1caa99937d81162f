"""Analysis reads on the read replica: which database they use, and when the replica may serve them.

With ``DATABASE_REPLICA_URL`` set, settings add the database alias ``replica`` (a PostgreSQL
streaming replica of the primary); without it there is only ``default`` and nothing here does
anything. Code marks the reads that may go to the replica with ``analysis_reads()`` (the
experiment aggregation) or ``stream_analysis_reads()`` (exports, streamed); inside, raw SQL runs
on ``connections[read_alias()]`` and the ORM's reads follow the database router
(config/routers.py), which asks ``read_alias()`` too. Writes always go to the primary.

Read-your-writes: a replica replays the primary's write-ahead log a little later (milliseconds
when healthy; seconds to hours when overloaded or broken). Before a block reads the replica,
the primary's current WAL position is taken and the replica must have replayed up to it, so
every transaction the primary had committed when the read began (events ingestion accepted,
the run's own row) is visible there: the reads see what the primary would have shown. The
block waits up to ``ABACUS_REPLICA_MAX_WAIT_SECONDS`` for that, then reads the primary instead
and logs a warning; an unreachable replica falls back the same way. A block entered inside a
transaction on the primary stays on the primary (only that transaction sees its own writes).

Some analysis data exists on the primary only: the incremental analysis' stored per-unit rows
are in an unlogged table (analysis/unit_aggregates.py), which a replica does not hold. Their
read is wrapped in ``primary_reads()``: inside an ``analysis_reads()`` block on the replica it
runs in a REPEATABLE READ transaction of its own on the primary.
"""

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

logger = logging.getLogger(__name__)

REPLICA = "replica"
T = TypeVar("T")

_read_alias: contextvars.ContextVar[str] = contextvars.ContextVar(
    "abacus_read_alias", default=DEFAULT_DB_ALIAS
)


def read_alias() -> str:
    """The database alias the current block's analysis reads use (``default`` outside one)."""
    return _read_alias.get()


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


@contextmanager
def analysis_reads() -> Iterator[str]:
    """Within the block, reads go to the replica if it has caught up with the primary; yields
    the alias they use."""
    token = _read_alias.set(_usable_alias())
    try:
        yield _read_alias.get()
    finally:
        _read_alias.reset(token)


@contextmanager
def primary_reads() -> Iterator[str]:
    """Within the block, reads go to the primary: the enclosing ``analysis_reads()`` block's
    transaction when that is on the primary, else one REPEATABLE READ transaction (every
    statement sees the same rows). Yields the alias."""
    if read_alias() == DEFAULT_DB_ALIAS:
        yield DEFAULT_DB_ALIAS
        return
    token = _read_alias.set(DEFAULT_DB_ALIAS)
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=DEFAULT_DB_ALIAS):
            if outermost and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield DEFAULT_DB_ALIAS
    finally:
        _read_alias.reset(token)


def stream_analysis_reads(generate: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of ``generate()``, produced with its reads under ``analysis_reads()`` in a
    context of its own: the code consuming a streamed response between two items (a WSGI
    server writing bytes) keeps reading the primary."""
    context = contextvars.copy_context()
    context.run(lambda: _read_alias.set(_usable_alias()))
    items = context.run(lambda: iter(generate()))
    try:
        while True:
            try:
                item = context.run(next, items)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            context.run(close)


def _usable_alias() -> str:
    """``replica`` when it is configured and has replayed the primary's current position (waiting
    up to ABACUS_REPLICA_MAX_WAIT_SECONDS), else ``default``."""
    current = read_alias()
    if current != DEFAULT_DB_ALIAS or not replica_configured():
        return current  # no replica, or an enclosing block already chose
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS  # the caller's uncommitted writes exist only on the primary
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        position = cursor.fetchone()[0]
    wait = float(getattr(settings, "ABACUS_REPLICA_MAX_WAIT_SECONDS", 10.0))
    try:
        if _replayed(position, wait):
            return REPLICA
        logger.warning(
            "the read replica has not replayed the primary's WAL position %s within %.1f s "
            "(ABACUS_REPLICA_MAX_WAIT_SECONDS): these analysis reads use the primary",
            position,
            wait,
        )
    except DatabaseError as exc:
        with suppress(DatabaseError):
            connections[REPLICA].close()
        logger.warning("the read replica is unavailable (%s): analysis reads use the primary", exc)
    return DEFAULT_DB_ALIAS


def _replayed(position: str, wait: float) -> bool:
    """Whether the replica has replayed the primary's WAL up to ``position``, polling for up
    to ``wait`` seconds. A server that is not in recovery (the URL names a primary, or the
    replica was promoted) holds everything it has."""
    deadline = time.monotonic() + wait
    pause = 0.01
    with connections[REPLICA].cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT NOT pg_is_in_recovery() OR "
                "COALESCE(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                [position],
            )
            if cursor.fetchone()[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
