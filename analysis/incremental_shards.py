"""A refresh's new events added on several database connections at once (PostgreSQL).

Adding a round's new events to the stored rows (analysis/incremental.py ``_add_events``) is
most of a refresh: per touched unit, an index lookup and a new version of its row, about 8 us
on one core, and PostgreSQL runs one statement (an UPDATE is never parallel) on one core. With
``ABACUS_INCREMENTAL_CONNECTIONS`` = n > 1 the units are split into n shards by a hash of their
ids (analysis/sql/incremental.py ``shard_of``): the refresh's own transaction adds the events
of shard 0 while n - 1 threads, each with a database connection and a transaction of its own,
add those of the others at the same time. Each shard's statement returns what it changed to the
per-variant sums, and the refresh adds them all to its totals.

Atomicity. The refresh holds the experiment's state locked from before the shards start until
it commits, so nothing else writes these rows meanwhile, and the shards touch disjoint rows.
Each shard's transaction records the event watermark it added up to (``UnitAggregateProgress``)
and waits until every shard has added its events:
- a shard fails (its statement, or shard 0's in the refresh's transaction): every shard's
  transaction rolls back, the refresh raises and its own rolls back; nothing was added;
- all succeeded: the shards commit, then the refresh goes on (the changed units' recomputation
  reads their rows) and commits. If it fails after the shards committed (or one shard's commit
  fails after another's), a shard's progress is above the state's watermark: its events are in
  the rows, the state does not count them, and the next refresh rebuilds the rows
  (``interrupted``) instead of adding them again.
So an event is never added twice nor lost; the price of the rare failure between the shards'
commits and the refresh's is one rebuild. A shard whose connection cannot be opened (the
server's ``max_connections`` reached) is added by the refresh on its own connection (logged).

Shards lower a snapshot's latency, not its cost: the same work runs on more cores (plus one
connection each per refresh). They are used when the refresh runs outside any transaction (a
shard's connection could not see the caller's uncommitted rows) and the round has at least
``ABACUS_INCREMENTAL_PARALLEL_FROM`` new event ids (default 10,000; below that, opening a
connection costs more than it saves).
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction

from analysis.models import UnitAggregateProgress
from analysis.sql.dialects import Dialect, dialect_for

T = TypeVar("T")
logger = logging.getLogger(__name__)


def shards_for(d: Dialect, outermost: bool, new_ids: int) -> int:
    """How many shards a refresh adds ``new_ids`` new event ids' events in; ``outermost``: the
    refresh is not inside a caller's transaction."""
    wanted = int(getattr(settings, "ABACUS_INCREMENTAL_CONNECTIONS", 1))
    least = int(getattr(settings, "ABACUS_INCREMENTAL_PARALLEL_FROM", 10_000))
    if d.vendor != "postgresql" or not outermost or new_ids < least:
        return 1
    return max(1, wanted)


def in_shards(
    add: Callable[[Any, int], T],
    shards: int,
    cursor: Any,
    *,
    experiment_id: int,
    event_watermark: int,
    prepare: Callable[[Dialect], object],
) -> list[T]:
    """``add(cursor, shard)`` for every shard: shard 0 on ``cursor`` (the refresh's transaction),
    the others at the same time, each on a thread with its own connection and transaction that
    ``prepare`` sets up. Once every shard has added its events, the others record
    ``event_watermark`` as their progress and commit; if any failed, they all roll back.
    Returns the results in shard order; raises a shard's failure (after every shard ended)."""
    if shards <= 1:
        return [add(cursor, 0)]
    decision = _Decision()
    added: list[Future] = [Future() for _ in range(1, shards)]
    with ThreadPoolExecutor(max_workers=shards - 1, thread_name_prefix="abacus-shard") as pool:
        committed = [
            pool.submit(
                _own_transaction,
                add,
                shard,
                added[shard - 1],
                decision,
                (experiment_id, event_watermark),
                prepare,
            )
            for shard in range(1, shards)
        ]
        try:
            results = [add(cursor, 0)]
            for shard, future in enumerate(added, start=1):
                try:
                    results.append(future.result())
                except _NoConnection as exc:
                    logger.warning("%s; adding its events on the refresh's connection", exc)
                    results.append(add(cursor, shard))  # in the refresh's transaction
            decision.decide(commit=True)
        finally:
            decision.decide(commit=False)  # no effect once decided
        for future in committed:
            future.result()  # a failed commit
    return results


class _Decision:
    """Whether the shards commit, told to their threads once."""

    def __init__(self) -> None:
        self.commit = False
        self._made = threading.Event()

    def decide(self, commit: bool) -> None:
        if not self._made.is_set():
            self.commit = commit
            self._made.set()

    def wait(self) -> bool:
        self._made.wait()
        return self.commit


class _Abandoned(Exception):
    """Another shard failed: roll this one back."""


class _NoConnection(Exception):
    """A shard's connection could not be opened (e.g. ``max_connections`` reached): the
    refresh adds that shard's events itself."""


def _own_transaction(
    add: Callable[[Any, int], T],
    shard: int,
    added: Future,
    decision: _Decision,
    progress: tuple[int, int],
    prepare: Callable[[Dialect], object],
) -> None:
    """One shard's transaction on this thread's connection: its events added (the result, or
    the failure, set on ``added``), its progress recorded, then committed or rolled back as
    ``decision`` says."""
    connection = connections[DEFAULT_DB_ALIAS]  # this thread's own
    try:
        try:
            connection.ensure_connection()
        except OperationalError as exc:
            added.set_exception(_NoConnection(f"shard {shard}: no connection ({exc})"))
            return
        with transaction.atomic():
            try:
                prepare(dialect_for(connection))
                with connection.cursor() as cursor:
                    result = add(cursor, shard)
                    cursor.execute(
                        "INSERT INTO analysis_unitaggregateprogress"
                        " (experiment_id, shard, event_watermark) VALUES (%s, %s, %s)"
                        " ON CONFLICT (experiment_id, shard)"
                        " DO UPDATE SET event_watermark = excluded.event_watermark",
                        [progress[0], shard, progress[1]],
                    )
            except BaseException as exc:
                added.set_exception(exc)
                raise
            added.set_result(result)
            if not decision.wait():
                raise _Abandoned
    except _Abandoned:
        pass
    finally:
        connection.close()  # a thread of the next refresh opens its own


def interrupted(experiment_id: int, event_watermark: int) -> bool:
    """Whether a shard committed events above the state's ``event_watermark`` (its refresh then
    failed): the rows hold events the state does not count."""
    return UnitAggregateProgress.objects.filter(
        experiment_id=experiment_id, event_watermark__gt=event_watermark
    ).exists()


def forget(experiment_id: int) -> None:
    """A rebuild starts: no shard's progress applies to the new rows."""
    UnitAggregateProgress.objects.filter(experiment_id=experiment_id).delete()
