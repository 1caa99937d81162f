"""Incremental analysis: a snapshot reads what changed since the last one, not every event.

The full metrics statement (analysis/aggregation.py) reads all of an experiment's exposures and
events at every snapshot. This module keeps its ``per_unit`` step stored instead, one row per
exposed unit (``UnitAggregate``; analysis/unit_aggregates.py), and brings the rows up to date
from the rows added to the event tables since (by id, whatever their timestamps):

1. ``refresh`` (on the primary, before the snapshot's read): a safe watermark on the event
   tables' ids (analysis/watermarks.py: no event at or below it can commit later); the metric
   events with ids between the old and the new watermark are added to their units' rows (every
   stored column adds up: a binomial's count of events is read as 0 or 1; a large round on
   several connections at once, analysis/incremental_shards.py); then the units whose
   t0 or state may have changed are recomputed from their events: those with a new exposure
   (it may move t0 earlier or add a second variant) and those whose ``pending`` timestamp (an
   exposure, or an event in the window, stamped after the previous cut-off) the new cut-off
   has reached. The per-variant sums of the rows are kept with them (analysis/unit_sums.py).
2. ``analysis.incremental_read.experiment_aggregates`` (in the snapshot's consistent read): the
   per-variant sums kept with the rows, and for a winsorized metric the highest values of its
   columns (its caps depend on every unit); units with rows above the watermark (committed
   since step 1) are computed from their events in the same read. The result is the full
   statement's for the same cut-off and the same events.

The full statement stays the reference and the fallback: it computes the snapshot when the
incremental path is off (``ABACUS_INCREMENTAL_AGGREGATES``), for a backfill or any cut-off
before the stored rows' (a past cut-off), for metrics the rows do not hold (property filters
or value properties, beyond ``SLOTS`` metrics; the other metrics still come from the rows), and
when a step fails on the data (logged). The first snapshot, a new phase or a changed metric
definition (the state's ``signature``) rebuilds the rows, as does
``manage.py rebuild_aggregates`` (repairs: after deleting or restoring events).
"""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.utils import timezone

from analysis import incremental_shards, incremental_tops, watermarks
from analysis.aggregation import MetricSpec
from analysis.incremental_plan import Plan, lateral_lookups, plan_for, tune_statements, window_of
from analysis.models import AggregateState, UnitAggregateMark
from analysis.sql import incremental as sql
from analysis.sql import incremental_tops as tops_sql
from analysis.sql.dialects import Dialect, dialect_for
from analysis.unit_sums import Sums
from analysis.watermarks import Watermark
from experiments.models import Experiment

logger = logging.getLogger(__name__)

REBUILD_CHUNK = 50_000  # units per transaction of a rebuild
REBUILD_WAIT_SECONDS = 30.0  # for the writers in progress when a rebuild starts


class Superseded(Exception):
    """Another rebuild of the same experiment started after this one."""


def enabled() -> bool:
    return bool(getattr(settings, "ABACUS_INCREMENTAL_AGGREGATES", True))


# --- 1. bring the stored rows up to date ------------------------------------------------------


def refresh(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
) -> bool:
    """Bring the experiment's stored rows up to the cut-off ``through`` and the events committed
    now (rebuilding them if they are missing or were computed for other metrics or another
    phase), on the primary. Returns whether the snapshot can read them
    (``experiment_aggregates``); False: compute it with the full statement."""
    if not enabled():
        return False
    plan = plan_for(metrics, since)
    if plan is None:
        return False
    d = dialect_for(connections[DEFAULT_DB_ALIAS])
    if not _statements_see_new_rows(d):
        logger.info("experiment %s: inside a snapshot transaction; full statement", experiment_id)
        return False
    window = window_of(experiment_id, project_id, since, through)
    outermost = not d.connection.in_atomic_block
    try:
        with transaction.atomic():
            tune_statements(d)
            state = _locked_state(d, experiment_id)
            if (
                state is not None
                and state.ready
                and state.signature == plan.signature
                and _rows_kept(state)
            ):
                if through < state.through:
                    logger.info(
                        "experiment %s: cut-off %s is before the stored rows' (%s): full statement",
                        experiment_id,
                        through.isoformat(),
                        state.through.isoformat(),
                    )
                    return False
                _advance(d, plan, state, window, outermost)
                return True
        _rebuild(d, plan, window)
        return True
    except (DatabaseError, Superseded) as exc:
        if isinstance(exc, DatabaseError) and not d.is_per_metric_failure(exc):
            raise
        logger.warning(
            "experiment %s: the stored aggregates could not be brought up to date (%s); "
            "full statement",
            experiment_id,
            exc,
        )
        return False


def _statements_see_new_rows(d: Dialect) -> bool:
    """Whether each statement of ours will see the rows committed before it (the watermark's
    proof needs it): PostgreSQL READ COMMITTED, not inside a REPEATABLE READ transaction."""
    if d.vendor != "postgresql" or not d.connection.in_atomic_block:
        return True
    with d.connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        return cursor.fetchone()[0] == "read committed"


def _locked_state(d: Dialect, experiment_id: int) -> AggregateState | None:
    """The experiment's state, locked until the transaction ends (on SQLite: the database's
    write lock, taken by a write, so that two refreshes do not both read the old watermark)."""
    if d.vendor == "sqlite":
        with d.connection.cursor() as cursor:
            cursor.execute(
                "UPDATE analysis_aggregatestate SET generation = generation "
                "WHERE experiment_id = %s",
                [experiment_id],
            )
    return AggregateState.objects.select_for_update().filter(experiment_id=experiment_id).first()


def _rows_kept(state: AggregateState) -> bool:
    """Whether the unlogged rows of the state's rebuild are still there (PostgreSQL empties
    them after a crash, and a promoted replica never had them) and hold exactly the events the
    state counts (not so after a refresh failed once one of its shards had committed,
    analysis/incremental_shards.py); logs when they do not."""
    kept = UnitAggregateMark.objects.filter(
        experiment_id=state.experiment_id, generation=state.generation
    ).exists()
    if not kept:
        logger.warning(
            "experiment %s: the stored aggregates are gone (a crash or a failover); rebuilding",
            state.experiment_id,
        )
        return False
    if incremental_shards.interrupted(state.experiment_id, state.event_watermark):
        logger.warning(
            "experiment %s: a refresh failed after one of its shards had committed; rebuilding",
            state.experiment_id,
        )
        return False
    return True


def _wait_seconds() -> float:
    return float(getattr(settings, "ABACUS_AGGREGATES_WAIT_SECONDS", 2.0))


def _advance(
    d: Dialect, plan: Plan, state: AggregateState, window: dict[str, Any], outermost: bool
) -> None:
    """Add the events up to the new safe watermark (in shards when ``outermost``, the refresh
    being in no caller's transaction, and there are many) and recompute the units whose t0 or
    state may have changed, keeping the per-variant sums with the rows; then record the
    watermark and the cut-off (the caller's transaction)."""
    old = Watermark(state.exposure_watermark, state.event_watermark)
    new, candidates = watermarks.advance(d.connection, old, state.candidates, _wait_seconds())
    through = window["through"]
    params = plan.params(
        d, window, x_lo=old.exposure, x_hi=new.exposure, e_lo=old.event, e_hi=new.event
    )
    s, totals, written = plan.stored, Sums.load(state.sums), 0
    tops = incremental_tops.thresholds_of(state)
    with d.connection.cursor() as cursor:
        if new.exposure > old.exposure:
            cursor.execute(sql.pre_start_sql("id > %(x_lo)s AND id <= %(x_hi)s"), params)
            state.pre_start += cursor.fetchone()[0]
        if new.event > old.event:
            shards = incremental_shards.shards_for(d, outermost, new.event - old.event)
            written += _add_events(d, s, cursor, params, totals, tops, shards)
        if new.exposure > old.exposure or through > state.through:
            written += _store_changed_units(d, s, cursor, params, totals, tops)
        if d.vendor == "postgresql":
            state.thresholds = incremental_tops.keep_thresholds(plan, state, cursor, params)
        state.sums_age += written
        if state.sums_age > max(totals.units(), 1000):
            # Bound the rounding the differences accumulate: sum the rows anew (amortized:
            # at most once per as many rows written as there are units).
            cursor.execute(sql.stored_sums_sql(d, s), params)
            totals, state.sums_age = Sums.from_rows(cursor.fetchall()), 0
    state.sums = totals.dump()
    state.exposure_watermark, state.event_watermark = new.exposure, new.event
    state.candidates = candidates
    state.through = through
    state.save(
        update_fields=[
            "exposure_watermark",
            "event_watermark",
            "candidates",
            "through",
            "sums",
            "sums_age",
            "pre_start",
            "thresholds",
            "updated_at",
        ]
    )


def _add_events(
    d: Dialect,
    s: sql.Stored,
    cursor: Any,
    params: dict,
    totals: Sums,
    tops: dict[int, float],
    shards: int = 1,
) -> int:
    """Add the new events to the stored rows, and what that changed to ``totals`` (and on
    PostgreSQL to the top units of ``tops``, the thresholds), in ``shards`` shards at once
    (analysis/incremental_shards.py); returns how many rows changed."""
    sharded = shards > 1
    ctes, update, units = sql.add_events_sql(d, s, d.supports_index_lookup, sharded)
    if d.vendor == "postgresql":
        differences = sql.sums(s.stored_pairs(), s.stored_pairs(before=True))
        returning = sql.returned(s, added=True, unit=bool(tops))
        after = tops_sql.keep_tops_ctes(s, tops, before_known=True)
        statement = sql.sums_of_returned(ctes, update, returning, differences, after)

        def add(shard_cursor: Any, shard: int) -> list[tuple]:
            shard_cursor.execute(statement, {**params, "shard": shard, "shards": shards})
            return shard_cursor.fetchall()

        results = incremental_shards.in_shards(
            add,
            shards,
            cursor,
            experiment_id=params["experiment"],
            event_watermark=params["e_hi"],
            prepare=tune_statements,
        )
        return sum(totals.add_written(rows) for rows in results)
    # SQLite: a RETURNING clause cannot read the UPDATE's FROM: the units' sums before and after.
    before = f"WITH {ctes} {sql.stored_sums_sql(d, s, units)}"
    cursor.execute(before, params)
    totals.add(cursor.fetchall(), sign=-1)
    cursor.execute(f"WITH {ctes} {update}", params)
    written = cursor.rowcount
    cursor.execute(before, params)
    totals.add(cursor.fetchall())
    return written


def _store_changed_units(
    d: Dialect, s: sql.Stored, cursor: Any, params: dict, totals: Sums, tops: dict[int, float]
) -> int:
    """Recompute the units with new exposures or reached pending timestamps, and what that
    changed to ``totals`` (and on PostgreSQL to the top units of ``tops``); returns how many
    rows were written."""
    units = sql.changed_units(d)
    cursor.execute(sql.stored_sums_sql(d, s, units), params)
    totals.add(cursor.fetchall(), sign=-1)
    ctes, upsert = sql.store_units_sql(d, s, units, lateral_lookups(d))
    if d.vendor == "postgresql":
        expressions = sql.sums(s.stored_pairs())
        returning = sql.returned(s, unit=bool(tops))
        after = tops_sql.keep_tops_ctes(s, tops, before_known=False)
        cursor.execute(sql.sums_of_returned(ctes, upsert, returning, expressions, after), params)
        return totals.add_written(cursor.fetchall())
    cursor.execute(f"WITH {ctes} {upsert} RETURNING {sql.returned(s)}", params)
    rows = cursor.fetchall()
    totals.add(Sums.of_rows(rows, s.binary))
    return len(rows)


# --- rebuilding -------------------------------------------------------------------------------


def _rebuild(
    d: Dialect,
    plan: Plan,
    window: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Recompute every unit's row from the events up to a safe watermark, REBUILD_CHUNK units
    per transaction (SQLite's write lock, which ingestion waits for, is held one chunk at a
    time). Returns the number of units. A rebuild started meanwhile supersedes this one."""
    experiment_id = window["experiment_id"]
    with transaction.atomic():
        state = _locked_state(d, experiment_id) or AggregateState(experiment_id=experiment_id)
        mark, candidates = watermarks.advance(d.connection, Watermark(), [], REBUILD_WAIT_SECONDS)
        state.signature, state.metrics = plan.signature, plan.definitions
        state.since, state.through = window["since"], window["through"]
        state.exposure_watermark, state.event_watermark = mark.exposure, mark.event
        state.candidates, state.ready = candidates, False
        state.thresholds = {}
        state.generation += 1
        with d.connection.cursor() as cursor:
            counted = {**plan.params(d, window), "x_hi": mark.exposure}
            cursor.execute(sql.pre_start_sql("id <= %(x_hi)s"), counted)
            state.pre_start = cursor.fetchone()[0]
        state.save()
        generation = state.generation
        UnitAggregateMark.objects.filter(experiment_id=experiment_id).delete()
        incremental_shards.forget(experiment_id)
        with d.connection.cursor() as cursor:
            for table in (sql.TABLE, tops_sql.TOP_TABLE):
                cursor.execute(f"DELETE FROM {table} WHERE experiment_id = %s", [experiment_id])
    params = plan.params(d, window, e_hi=mark.event)
    chunks, units = _chunks(d, params)
    ctes, upsert = sql.store_units_sql(d, plan.stored, None, lateral_lookups(d))
    statement = f"WITH {ctes} {upsert}"
    for done, (lo, hi) in enumerate(chunks, start=1):
        with transaction.atomic():
            tune_statements(d)
            _check_generation(d, experiment_id, generation)
            with d.connection.cursor() as cursor:
                cursor.execute(statement, {**params, "lo": lo, "hi": hi})
        if progress is not None:
            progress(min(done * REBUILD_CHUNK, units), units)
    with transaction.atomic():
        state = _check_generation(d, experiment_id, generation)
        with d.connection.cursor() as cursor:
            if d.vendor == "postgresql":
                # The planner's statistics of the new rows: the snapshot's read follows.
                cursor.execute(f"ANALYZE {sql.TABLE}")
            cursor.execute(sql.stored_sums_sql(d, plan.stored), params)
            state.sums, state.sums_age = Sums.from_rows(cursor.fetchall()).dump(), 0
        state.ready, state.rebuilt_at = True, timezone.now()
        state.save(update_fields=["sums", "sums_age", "ready", "rebuilt_at", "updated_at"])
        UnitAggregateMark.objects.update_or_create(
            experiment_id=experiment_id, defaults={"generation": generation}
        )
    return units


def _chunks(d: Dialect, params: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """(lo, hi] ranges of unit ids, REBUILD_CHUNK units each, and the number of units."""
    with d.connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), MAX(unit_id) FROM ({sql.all_units()}) a", params)
        units, last = cursor.fetchone()
        cursor.execute(sql.chunk_bounds_sql(REBUILD_CHUNK), params)
        bounds = [row[0] for row in cursor.fetchall()]
    if not units:
        return [], 0
    if not bounds or bounds[-1] != last:
        bounds.append(last)
    return list(zip(["", *bounds[:-1]], bounds, strict=True)), int(units)


def _check_generation(d: Dialect, experiment_id: int, generation: int) -> AggregateState:
    state = _locked_state(d, experiment_id)
    if state is None or state.generation != generation:
        raise Superseded(f"another rebuild of experiment {experiment_id} started")
    return state


def rebuild(
    experiment: Experiment, progress: Callable[[int, int], None] | None = None
) -> int | None:
    """Recompute the experiment's stored rows from its events, at its live cut-off (now, or
    when it ended), as the next snapshot would (repairs: after events were deleted or
    restored). Returns how many units they hold; None when none of its metrics can be
    stored (nothing written). ``progress(units done, units)`` after each chunk."""
    from analysis.compute import _metric_spec  # compute imports this module

    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    now = timezone.now()
    ended = experiment.ended_at
    through = ended if ended is not None and ended < now else now
    metrics = [_metric_spec(em) for em in experiment.experiment_metrics.select_related("metric")]
    plan = plan_for(metrics, since)
    if plan is None:
        return None
    d = dialect_for(connections[DEFAULT_DB_ALIAS])
    return _rebuild(
        d, plan, window_of(experiment.pk, experiment.project_id, since, through), progress
    )


def forget_deleted_events(*, project_id: int, **_: Any) -> None:
    """Events of the project were deleted (assignments.signals.events_deleted): the stored
    rows of its experiments may hold them, so the next snapshot of each rebuilds them."""
    AggregateState.objects.filter(experiment__project_id=project_id).update(ready=False)
