"""Batch event ingestion: validate, then store every valid event in one statement per table
(COPY on PostgreSQL, ``INSERT OR IGNORE`` elsewhere), idempotently by (project, event_id)."""

from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from assignments.models import Exposure, MetricEvent
from assignments.selectors import project_specs
from assignments.services.assignment_rows import (
    _ROWS_PER_STATEMENT,
    _assignment_rows,
    _assignments_insert,
)
from assignments.services.validate import EventBatch, IngestResult, events_validate
from core.errors import DomainError
from experiments.models import Project

MAX_BATCH = 10_000


def events_ingest(*, project: Project, events: Sequence[Any]) -> IngestResult:
    """Validate each event; store the valid ones idempotently by (project, event_id).

    Valid events are committed (before this returns) even when others in the batch are
    rejected. Duplicates (an event_id seen before, or twice in the batch) are counted, not
    stored again. Events are stored with their own timestamps, late or out of order.

    An exposure whose variant differs from the unit's stored assignment is stored with
    ``assignment_mismatch`` set: the unit has seen two variants (a multi-exposure). The first
    exposure of a unit without a stored assignment in a running experiment stores one (the
    unit was bucketed by an SDK evaluating locally), so ``/assign`` keeps answering what the unit
    saw; it costs one set-based INSERT per batch.
    """
    if len(events) > MAX_BATCH:
        raise DomainError(
            f"A batch holds at most {MAX_BATCH} events (got {len(events)}).", "events"
        )
    batch, result = events_validate(specs=project_specs(project), events=events)
    if batch.exposures or batch.metrics:
        with transaction.atomic():
            result.duplicates += _drop_ids_of_the_other_type(project_id=project.pk, batch=batch)
            if not (batch.exposures or batch.metrics):
                inserted = 0
            elif connection.vendor == "postgresql":
                from assignments.copy import copy_events

                inserted = copy_events(project_id=project.pk, batch=batch)
            else:
                inserted = _insert_events(project_id=project.pk, batch=batch)
        result.accepted = inserted
        result.duplicates += len(batch.exposures) + len(batch.metrics) - inserted
    return result


def probe_other_type_sql(table: str) -> str:
    """PostgreSQL: which of the ids (an array parameter) the table holds for the project.

    A LATERAL subquery with LIMIT 1 is a nested loop by construction, one unique-index lookup
    per id. ``event_id = ANY(%s)`` let the planner read every event of the project (a bitmap
    scan on project_id, then a filter), a cost that grew with the project's history."""
    return (
        "SELECT k.id FROM unnest(%s::varchar[]) AS k(id) CROSS JOIN LATERAL "
        f"(SELECT 1 FROM {table} o WHERE o.project_id = %s AND o.event_id = k.id LIMIT 1) AS hit"
    )


def _drop_ids_of_the_other_type(*, project_id: int, batch: EventBatch) -> int:
    """One event id per project, across both types: drop the exposures whose id a stored metric
    event has, and the metric events whose id a stored exposure has (each table's unique
    (project, event_id) constraint covers its own type). Returns how many were dropped.

    Two batches racing with one id as both types could still both store it; a client retry
    resends the same type, so that needs a client sending one id for two different events."""
    dropped = 0
    postgresql = connection.vendor == "postgresql"
    for ids, other in ((batch.exposures, MetricEvent), (batch.metrics, Exposure)):
        keys = list(ids)
        if not keys:
            continue
        table = other._meta.db_table
        # One probe of the other table's unique (project_id, event_id) index per id: a single
        # array parameter on PostgreSQL, chunks under SQLite's bound-parameter limit (its IN
        # list on the index's two columns is one index lookup per id).
        step = len(keys) if postgresql else _ROWS_PER_STATEMENT
        with connection.cursor() as cursor:
            for start in range(0, len(keys), step):
                chunk = keys[start : start + step]
                if postgresql:
                    cursor.execute(probe_other_type_sql(table), [chunk, project_id])
                else:
                    cursor.execute(
                        f"SELECT event_id FROM {table} WHERE project_id = %s "
                        f"AND event_id IN ({', '.join(['%s'] * len(chunk))})",
                        [project_id, *chunk],
                    )
                for (event_id,) in cursor.fetchall():
                    if ids.pop(event_id, None) is not None:
                        dropped += 1
    if not batch.exposures:
        batch.running_phases.clear()
    return dropped


def _insert_events(*, project_id: int, batch: EventBatch) -> int:
    """The portable path (SQLite): INSERT OR IGNORE; counts inserted rows by total_changes."""
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    connection.ensure_connection()
    raw = connection.connection
    before = raw.total_changes
    with connection.cursor() as cursor:
        if batch.exposures:
            rows = list(batch.exposures.values())
            pairs = {
                (e, u): v
                for e, u, v in _assignment_rows(
                    list({r[1] for r in rows}), list({r[3] for r in rows})
                )
            }
            cursor.executemany(
                "INSERT OR IGNORE INTO assignments_exposure (project_id, event_id, experiment_id, "
                "variant_id, unit_id, ts, assignment_mismatch, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        project_id,
                        event_id,
                        e,
                        v,
                        u,
                        adapt(ts),
                        pairs.get((e, u), v) != v,
                        now,
                    )
                    for event_id, e, v, u, ts in rows
                ],
            )
        exposures_inserted = raw.total_changes - before
        if batch.metrics:
            cursor.executemany(
                "INSERT OR IGNORE INTO assignments_metricevent (project_id, event_id, name, "
                "unit_id, value, ts, properties, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (project_id, event_id, name, u, value, adapt(ts), properties, now)
                    for event_id, name, u, value, ts, properties in batch.metrics.values()
                ],
            )
        inserted = raw.total_changes - before
        if batch.running_phases and exposures_inserted:
            _assign_from_exposures(batch, pairs)
    return inserted


def _assign_from_exposures(batch: EventBatch, pairs: dict[tuple[int, str], int]) -> None:
    """Store the earliest exposure of each unassigned unit in a running experiment as its
    assignment (``pairs``: the stored ``(experiment_id, unit_id) -> variant_id``)."""
    first: dict[tuple[int, str], tuple] = {}
    for _, e, v, u, _ts in sorted(batch.exposures.values(), key=lambda r: r[4]):
        if e in batch.running_phases and (e, u) not in pairs:
            first.setdefault((e, u), (e, u, v, batch.running_phases[e]))
    if first:
        _assignments_insert(list(first.values()))
