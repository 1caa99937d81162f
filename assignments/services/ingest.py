"""Batch event ingestion: validate, then store every valid event idempotently by (project,
event_id): one event id is one event across experiment exposures, flag exposures and metric
events. PostgreSQL: COPY, then one statement through the event-id ledger (assignments/copy.py);
elsewhere ``INSERT OR IGNORE`` per table on its unique (project, event_id) key, after a probe of
the other types' tables."""

from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from assignments.models import Exposure, FlagExposure, MetricEvent
from assignments.selectors import project_specs
from assignments.services.assignment_rows import (
    _ROWS_PER_STATEMENT,
    _assignment_rows,
    _assignments_insert,
)
from assignments.services.flag_usage import flag_usage_add, usage_counts
from assignments.services.holdout_exposures import holdout_exposures_record
from assignments.services.validate import (
    EventBatch,
    FlagTargets,
    IngestResult,
    events_validate,
)
from core.errors import DomainError
from experiments.holdouts import ServedHoldout
from experiments.models import Environment, Project

MAX_BATCH = 10_000


def events_ingest(
    *, project: Project, events: Sequence[Any], environment_id: int | None = None
) -> IngestResult:
    """Validate each event; store the valid ones idempotently by (project, event_id).
    ``environment_id``: where flag exposures are recorded (the API key's environment;
    production when None). Each new flag exposure counts one evaluation of its flag.

    Valid events are committed (before this returns) even when others in the batch are
    rejected. Duplicates (an event_id seen before, or twice in the batch) are counted, not
    stored again. Events are stored with their own timestamps, late or out of order.

    An exposure whose variant differs from the unit's stored assignment is stored with
    ``assignment_mismatch`` set: the unit has seen two variants (a multi-exposure). The first
    exposure of a unit without a stored assignment in a running experiment stores one (the
    unit was bucketed by an SDK evaluating locally), so ``/assign`` keeps answering what the unit
    saw; it costs one set-based INSERT per batch.

    Flag exposures in production are also the running holdout's exposures (units of either arm
    of the comparison, `holdout_exposures`), in the same transaction.
    """
    if len(events) > MAX_BATCH:
        raise DomainError(
            f"A batch holds at most {MAX_BATCH} events (got {len(events)}).", "events"
        )
    specs = project_specs(project)
    batch, result = events_validate(
        specs=specs,
        events=events,
        flags=FlagTargets(project.pk, environment_id),
        retention_days=project.event_retention_days,
    )
    valid = len(batch.exposures) + len(batch.metrics) + len(batch.flag_exposures)
    if valid:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                from assignments.copy import copy_events

                inserted = copy_events(project_id=project.pk, batch=batch)
            elif _drop_ids_of_the_other_type(project_id=project.pk, batch=batch) == valid:
                inserted = 0
            else:
                inserted = _insert_events(project_id=project.pk, batch=batch)
            if specs.holdout is not None and batch.flag_exposures:
                _holdout_exposures(specs.holdout, batch)
        result.accepted = inserted
        result.duplicates += valid - inserted
    return result


def _holdout_exposures(holdout: ServedHoldout, batch: EventBatch) -> None:
    """The batch's flag exposures seen in production, as the holdout's exposures."""
    rows = batch.flag_exposures.values()  # (event id, environment, flag, variation, unit, ts)
    production = set(
        Environment.objects.filter(pk__in={row[1] for row in rows}, production=True).values_list(
            "pk", flat=True
        )
    )
    units = [(row[4], row[5]) for row in rows if row[1] in production]
    if units:
        holdout_exposures_record(holdout=holdout, units=units)


def _drop_ids_of_the_other_type(*, project_id: int, batch: EventBatch) -> int:
    """SQLite: one event id per project, across the three types: drop the batch's events whose
    id is stored in another type's table (each table's unique (project, event_id) constraint
    covers its own type). Each table is probed once, for the ids of the other types, in chunks
    under SQLite's bound-parameter limit (its IN list on the index's two columns is one index
    lookup per id). Returns how many were dropped. SQLite's transactions are IMMEDIATE
    (config/settings.py): the probe and the inserts hold the write lock together. PostgreSQL
    needs no probe: its event-id ledger holds every type's ids (assignments/copy.py)."""
    dropped = 0
    kinds = (
        (batch.exposures, Exposure),
        (batch.metrics, MetricEvent),
        (batch.flag_exposures, FlagExposure),
    )
    for _, model in kinds:
        others = [ids for ids, other in kinds if other is not model and ids]
        keys = [key for ids in others for key in ids]
        table = model._meta.db_table
        with connection.cursor() as cursor:
            for start in range(0, len(keys), _ROWS_PER_STATEMENT):
                chunk = keys[start : start + _ROWS_PER_STATEMENT]
                cursor.execute(
                    f"SELECT event_id FROM {table} WHERE project_id = %s "
                    f"AND event_id IN ({', '.join(['%s'] * len(chunk))})",
                    [project_id, *chunk],
                )
                for (event_id,) in cursor.fetchall():
                    for ids in others:
                        if ids.pop(event_id, None) is not None:
                            dropped += 1
                            break
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
                "variant_id, unit_id, ts, assignment_mismatch, attributes, received_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        project_id,
                        event_id,
                        e,
                        v,
                        u,
                        adapt(ts),
                        pairs.get((e, u), v) != v,
                        attributes,
                        now,
                    )
                    for event_id, e, v, u, ts, attributes in rows
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
    return inserted + _insert_flag_exposures(project_id=project_id, batch=batch, now=now)


def _insert_flag_exposures(*, project_id: int, batch: EventBatch, now: str) -> int:
    """The portable path for flag exposures: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
    in chunks, then one usage upsert per environment for the new ones. Returns how many were
    new."""
    rows = list(batch.flag_exposures.values())
    adapt = connection.ops.adapt_datetimefield_value
    new: list[tuple[int, int, str, Any]] = []
    with connection.cursor() as cursor:
        for lo in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[lo : lo + _ROWS_PER_STATEMENT]
            cursor.execute(
                "INSERT INTO assignments_flagexposure (project_id, event_id, environment_id, "
                "flag_id, variation, unit_id, ts, received_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                + " ON CONFLICT (project_id, event_id) DO NOTHING RETURNING event_id",
                [
                    x
                    for event_id, env, flag, variation, unit, ts in chunk
                    for x in (project_id, event_id, env, flag, variation, unit, adapt(ts), now)
                ],
            )
            for (event_id,) in cursor.fetchall():
                _, env, flag, variation, _, ts = batch.flag_exposures[event_id]
                new.append((env, flag, variation, ts))
    for env in {row[0] for row in new}:
        flag_usage_add(
            environment_id=env,
            counts=usage_counts((f, v, ts) for e, f, v, ts in new if e == env),
        )
    return len(new)


def _assign_from_exposures(batch: EventBatch, pairs: dict[tuple[int, str], int]) -> None:
    """Store the earliest exposure of each unassigned unit in a running experiment as its
    assignment (``pairs``: the stored ``(experiment_id, unit_id) -> variant_id``)."""
    first: dict[tuple[int, str], tuple] = {}
    for _, e, v, u, _ts, _ in sorted(batch.exposures.values(), key=lambda r: r[4]):
        if e in batch.running_phases and (e, u) not in pairs:
            first.setdefault((e, u), (e, u, v, batch.running_phases[e]))
    if first:
        _assignments_insert(list(first.values()))
