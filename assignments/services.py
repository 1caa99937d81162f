"""Writes on the service hot path: sticky assignment and batch event ingestion.

Both run per request for many units or events, so they skip per-row ORM work on purpose (no
model instances, no ``full_clean``): the APIs check the request's shape, these functions check
every rule row by row, and the rows reach the database in one statement per batch.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from assignments.models import Exposure, MetricEvent
from assignments.selectors import ProjectSpecs, project_specs
from bucketing.conditions import eval_condition
from bucketing.payload import ExperimentSpec, evaluate, evaluate_many
from core.errors import DomainError
from experiments.models import ExperimentStatus, Project
from experiments.services import audit_log_record

MAX_BATCH = 10_000
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_PROPERTIES_BYTES = 4096
MAX_TIMESTAMP_LENGTH = 64
# Events may arrive late (any time after 1970) but not from the future: a client clock more
# than this far ahead is a bug the client should hear about, not data for a future window.
MAX_CLOCK_SKEW = timedelta(days=1)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# A numeric timestamp is Unix seconds; one past 3000-01-01 is most likely milliseconds.
LATEST_EPOCH_SECONDS = int(datetime(3000, 1, 1, tzinfo=UTC).timestamp())
_ROWS_PER_STATEMENT = 1000  # keeps SQLite under its bound-parameter limit
_VECTOR_MIN = 256  # from this many units on, bucketing runs in numpy
_RUNNING = ExperimentStatus.RUNNING
_CONCLUDED = ExperimentStatus.CONCLUDED

Unit = tuple[str, Mapping[str, Any]]
Answer = dict[str, dict[str, Any]]


# --- assignment -----------------------------------------------------------------------------


def assignments_get_or_create(
    *,
    project: Project,
    units: Sequence[Unit],
    experiment_keys: Sequence[str] | None = None,
) -> list[Answer]:
    """The variant of each unit in each requested experiment, stored on first sight (sticky).

    ``units`` are ``(unit_id, attributes)``; the unit id is the value of each experiment's hash
    attribute. A running experiment first applies its targeting (always, like the SDKs apply a
    rule's condition), then returns the stored assignment, else hashes the unit (coverage,
    weights, namespace) and stores the result; concurrent first calls for one unit agree on
    the stored row. Paused and rolled-back experiments give everyone control and store nothing;
    a concluded experiment gives everyone its shipped variant (control without a decision).
    Those answers carry ``"in_experiment": false``. Units not in an experiment are omitted
    for it. Unknown or draft keys raise `DomainError`; an experiment whose definition is broken
    is omitted (the selector logs it).
    """
    specs = project_specs(project)
    keys = _requested_keys(specs, experiment_keys)
    running = [k for k in keys if specs.statuses[k] == _RUNNING]
    fixed = {k: _fixed_answer(specs.specs[k]) for k in keys if k not in running}
    results: list[Answer] = [dict(fixed) for _ in units]
    if not running or not units:
        return results
    stored = _stored_variants(specs, running, list({unit_id for unit_id, _ in units}))
    chosen = {key: _decide(specs.specs[key], units, stored) for key in running}
    new_rows: dict[tuple[str, str], str] = {}
    for key, variants in chosen.items():
        for (unit_id, _), variant_key in zip(units, variants, strict=True):
            if variant_key is not None and (key, unit_id) not in stored:
                new_rows[(key, unit_id)] = variant_key
    if new_rows:
        # Another request may have stored the same unit first: its row wins, here too.
        stored.update(_store_assignments(specs, new_rows))
    for key, variants in chosen.items():
        answers = {v.key: {"variant": v.key, "value": v.value} for v in specs.specs[key].variants}
        for answer, (unit_id, _), variant_key in zip(results, units, variants, strict=True):
            if variant_key is not None:
                answer[key] = answers[stored.get((key, unit_id), variant_key)]
    return results


def _requested_keys(specs: ProjectSpecs, experiment_keys: Sequence[str] | None) -> list[str]:
    if experiment_keys is None:
        return list(specs.specs)
    unknown = [k for k in experiment_keys if k not in specs.experiment_ids]
    if unknown:
        raise DomainError(f"Unknown or draft experiment(s): {', '.join(unknown)}.", "experiments")
    return [k for k in dict.fromkeys(experiment_keys) if k in specs.specs]


def _fixed_answer(spec: ExperimentSpec) -> dict[str, Any]:
    """The one answer a stopped experiment gives everybody."""
    variant = spec.control
    if spec.status == _CONCLUDED and spec.shipped_variant is not None:
        variant = spec.variant(spec.shipped_variant)
    return {"variant": variant.key, "value": variant.value, "in_experiment": False}


def _decide(
    spec: ExperimentSpec, units: Sequence[Unit], stored: Mapping[tuple[str, str], str]
) -> list[str | None]:
    """Per unit: the stored variant if the unit passes targeting, else the hashed one, else None."""
    attribute = spec.hash_attribute
    condition = spec.condition or None
    key = spec.key
    if len(units) < _VECTOR_MIN:  # one by one: numpy's fixed cost is not worth it
        out: list[str | None] = []
        for unit_id, attributes in units:
            attrs = (
                {attribute: unit_id}
                if not attributes
                else attributes
                if attributes.get(attribute) == unit_id
                else {**attributes, attribute: unit_id}
            )
            previous = stored.get((key, unit_id)) if stored else None
            if previous is None:
                out.append(evaluate(spec, attrs))
            elif condition is None or eval_condition(attrs, condition):
                out.append(previous)
            else:
                out.append(None)
        return out
    out = [None] * len(units)
    fresh: list[int] = []
    fresh_attributes: list[Mapping[str, Any]] = []
    for i, (unit_id, attributes) in enumerate(units):
        attrs = (
            attributes
            if attributes.get(attribute) == unit_id
            else {**attributes, attribute: unit_id}
        )
        previous = stored.get((key, unit_id))
        if previous is None:
            fresh.append(i)
            fresh_attributes.append(attrs)
        elif condition is None or eval_condition(attrs, condition):
            out[i] = previous
    if fresh:
        for i, variant_key in zip(fresh, evaluate_many(spec, fresh_attributes), strict=True):
            out[i] = variant_key
    return out


def _stored_variants(
    specs: ProjectSpecs, keys: Sequence[str], unit_ids: Sequence[str]
) -> dict[tuple[str, str], str]:
    """``(experiment key, unit id) -> variant key`` of the stored assignments."""
    if not keys or not unit_ids:
        return {}
    by_id = {specs.experiment_ids[k]: k for k in keys}
    variant_keys = {vid: vkey for (_, vkey), vid in specs.variant_ids.items()}
    return {
        (by_id[e], u): variant_keys[v]
        for e, u, v in _assignment_rows(list(by_id), unit_ids)
        if v in variant_keys
    }


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


def _store_assignments(
    specs: ProjectSpecs, rows: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """Insert new assignments; return the stored variant of every row that lost a race."""
    values = [
        (
            specs.experiment_ids[key],
            unit_id,
            specs.variant_ids[(key, variant_key)],
            specs.phases.get(key, 0),
        )
        for (key, unit_id), variant_key in rows.items()
    ]
    inserted = _assignments_insert(values)
    by_id = {specs.experiment_ids[key]: key for key, _ in rows}
    lost = {(key, unit_id) for key, unit_id in rows} - {(by_id[e], u) for e, u in inserted}
    if not lost:
        return {}
    return _stored_variants(specs, list({k for k, _ in lost}), list({u for _, u in lost}))


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


# --- ingestion ------------------------------------------------------------------------------


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Valid events that are stored but that no analysis will count, with the reason.
    ignored: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, index: int, field_name: str, message: str) -> None:
        self.rejected.append({"index": index, "field": field_name, "message": message})


# Rows as plain tuples (no model instances): the COPY and executemany paths take them as is.
ExposureRow = tuple[str, int, int, str, datetime]  # event_id, experiment, variant, unit, ts
MetricRow = tuple[str, str, str, float, datetime, str | None]  # event_id, name, unit, value, ts,
# properties as JSON text


@dataclass
class EventBatch:
    """A validated batch: new rows keyed by event_id (in-batch duplicates already dropped)."""

    exposures: dict[str, ExposureRow] = field(default_factory=dict)
    metrics: dict[str, MetricRow] = field(default_factory=dict)
    running_phases: dict[int, int] = field(default_factory=dict)  # experiment id -> phase


def _string_error(value: Any, name: str, limit: int) -> str | None:
    """Why ``value`` is not an acceptable id or name, or None."""
    if value.__class__ is not str:
        if value is None:
            return f"'{name}' is required."
        return f"'{name}' must be a string (got {type(value).__name__})."
    if not value:
        return f"'{name}' must not be empty."
    if len(value) > limit:
        return f"'{name}' is longer than {limit} characters."
    if "\x00" in value:
        return f"'{name}' must not contain NUL characters."
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"'{name}' is not valid Unicode (lone surrogate)."
    return None


def _epoch_seconds(value: int | float) -> datetime | str:
    """A number as Unix seconds (UTC), or why it is not acceptable."""
    if value.__class__ is float and not math.isfinite(value):
        return "'timestamp' must be a finite number of Unix seconds."
    if value >= LATEST_EPOCH_SECONDS:
        return (
            f"'timestamp' {value!r} is after the year 3000 as Unix seconds: numbers are seconds "
            "since 1970-01-01T00:00:00Z; divide milliseconds by 1000 (or send an ISO 8601 string)."
        )
    if value < 0:
        return "'timestamp' is before 1970."
    return datetime.fromtimestamp(value, UTC)


def _timestamp(value: Any, latest: datetime) -> datetime | str:
    """The event time, or why it is not acceptable: an ISO 8601 string (UTC without an offset)
    or a number of Unix seconds."""
    if value.__class__ is int or value.__class__ is float:
        ts = _epoch_seconds(value)
        if ts.__class__ is str:
            return ts
    elif value.__class__ is not str:
        if value is None:
            return (
                "'timestamp' is required: an ISO 8601 string (e.g. 2026-11-29T10:00:00Z) or a "
                "number of Unix seconds."
            )
        return (
            "'timestamp' must be an ISO 8601 string (e.g. 2026-11-29T10:00:00Z) or a number of "
            f"Unix seconds (got {type(value).__name__})."
        )
    elif len(value) > MAX_TIMESTAMP_LENGTH:
        return f"'timestamp' is longer than {MAX_TIMESTAMP_LENGTH} characters."
    else:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            return f"'timestamp' {value!r} is not ISO 8601 (e.g. 2026-11-29T10:00:00Z)."
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)  # a timestamp without an offset is UTC
    try:
        if ts < EARLIEST_TIMESTAMP:
            return "'timestamp' is before 1970."
        if ts > latest:
            return (
                f"'timestamp' is more than {MAX_CLOCK_SKEW.days} day ahead of the server's "
                "clock: check the client's clock."
            )
    except OverflowError:  # an offset that takes it outside datetime's range
        return "'timestamp' is out of range."
    return ts


def max_event_value() -> float:
    """The largest |value| a metric event may have (``ABACUS_MAX_EVENT_VALUE``)."""
    return float(settings.ABACUS_MAX_EVENT_VALUE)


def _value_bound_message(bound: float, value: float | None = None) -> str:
    shown = "" if value is None else f" {value:g}"
    return (
        f"'value'{shown} is too large: values must be between {-bound:g} and {bound:g} "
        "(ABACUS_MAX_EVENT_VALUE), so that the analysis sums cannot overflow."
    )


def _metric_value(value: Any, bound: float = math.inf) -> float | str:
    """The value as a float, or why it is not acceptable (``|value| <= bound``)."""
    if value.__class__ is float:
        if not math.isfinite(value):
            return "'value' must be a finite number."
        return value if -bound <= value <= bound else _value_bound_message(bound, value)
    if value.__class__ is int:
        try:
            number = float(value)
        except OverflowError:
            return _value_bound_message(bound)
        return number if -bound <= number <= bound else _value_bound_message(bound, number)
    return f"'value' must be a number (got {type(value).__name__})."


def _properties_json(value: Any) -> str | None | tuple[str]:
    """The properties as JSON text (None when absent), or ``(message,)`` when unacceptable."""
    if value is None:
        return None
    if value.__class__ is not dict:
        return ("'properties' must be a JSON object.",)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode())
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return ("'properties' must hold finite numbers and valid Unicode strings only.",)
    if size > MAX_PROPERTIES_BYTES:
        return (f"'properties' is {size} bytes as JSON; the limit is {MAX_PROPERTIES_BYTES}.",)
    if "\\u0000" in text:
        return ("'properties' must not contain NUL characters.",)
    return text


def events_validate(
    *, specs: ProjectSpecs, events: Sequence[Any]
) -> tuple[EventBatch, IngestResult]:
    """Check every event; return the rows to store and the result so far (rejections and
    in-batch duplicates). The first problem of an event names its field."""
    batch = EventBatch()
    result = IngestResult()
    reject = result.reject
    latest = timezone.now() + MAX_CLOCK_SKEW
    exposures = batch.exposures
    metrics = batch.metrics
    experiment_ids = specs.experiment_ids
    variant_ids = specs.variant_ids
    statuses = specs.statuses
    phase_starts = specs.phase_starts
    bound = max_event_value()
    for index, event in enumerate(events):
        if event.__class__ is not dict:
            reject(index, "event", "Each event must be a JSON object.")
            continue
        event_id = event.get("event_id")
        if error := _string_error(event_id, "event_id", MAX_ID_LENGTH):
            reject(index, "event_id", error)
            continue
        kind = event.get("type")
        if kind != "exposure" and kind != "metric":
            reject(index, "type", "'type' must be 'exposure' or 'metric'.")
            continue
        unit_id = event.get("unit_id")
        if error := _string_error(unit_id, "unit_id", MAX_ID_LENGTH):
            reject(index, "unit_id", error)
            continue
        ts = _timestamp(event.get("timestamp"), latest)
        if ts.__class__ is str:
            reject(index, "timestamp", ts)
            continue
        if kind == "exposure":
            key = event.get("experiment")
            if error := _string_error(key, "experiment", MAX_NAME_LENGTH):
                reject(index, "experiment", error)
                continue
            experiment_id = experiment_ids.get(key)
            if experiment_id is None:
                reject(index, "experiment", f"Unknown experiment '{key}' (or still a draft).")
                continue
            variant = event.get("variant")
            variant_id = variant_ids.get((key, variant)) if variant.__class__ is str else None
            if variant_id is None:
                if error := _string_error(variant, "variant", MAX_NAME_LENGTH):
                    reject(index, "variant", error)
                else:
                    reject(index, "variant", f"Experiment '{key}' has no variant '{variant}'.")
                continue
            if event_id in exposures or event_id in metrics:
                result.duplicates += 1
                continue
            exposures[event_id] = (event_id, experiment_id, variant_id, unit_id, ts)
            phase_start = phase_starts.get(key)
            if phase_start is not None and ts < phase_start:
                result.ignored.append(
                    {
                        "index": index,
                        "reason": "before_phase_start",
                        "message": f"Stored, but not counted: the exposure is stamped before "
                        f"experiment '{key}' started its current phase "
                        f"({phase_start.isoformat()}), and analyses count exposures from then.",
                    }
                )
            if statuses[key] == _RUNNING:
                batch.running_phases[experiment_id] = specs.phases.get(key, 0)
        else:
            name = event.get("name")
            if error := _string_error(name, "name", MAX_NAME_LENGTH):
                reject(index, "name", error)
                continue
            value = event.get("value")
            value = 1.0 if value is None else _metric_value(value, bound)
            if value.__class__ is str:
                reject(index, "value", value)
                continue
            properties = _properties_json(event.get("properties"))
            if properties.__class__ is tuple:
                reject(index, "properties", properties[0])
                continue
            if event_id in exposures or event_id in metrics:
                result.duplicates += 1
                continue
            metrics[event_id] = (event_id, name, unit_id, value, ts, properties)
    return batch, result


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
        # array parameter on PostgreSQL, chunks under SQLite's bound-parameter limit.
        step = len(keys) if postgresql else _ROWS_PER_STATEMENT
        with connection.cursor() as cursor:
            for start in range(0, len(keys), step):
                chunk = keys[start : start + step]
                if postgresql:
                    cursor.execute(
                        f"SELECT event_id FROM {table} WHERE project_id = %s "
                        "AND event_id = ANY(%s)",
                        [project_id, chunk],
                    )
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
            first: dict[tuple[int, str], tuple] = {}
            for _, e, v, u, _ts in sorted(batch.exposures.values(), key=lambda r: r[4]):
                if e in batch.running_phases and (e, u) not in pairs:
                    first.setdefault((e, u), (e, u, v, batch.running_phases[e]))
            if first:
                _assignments_insert(list(first.values()))
    return inserted


# --- removing bad events ----------------------------------------------------------------------

EVENT_TYPES = ("metric", "exposure", "all")
MAX_DELETE_FILTER_ITEMS = 1000  # per list: keeps each IN (...) under SQLite's parameter limit


@dataclass(frozen=True)
class EventDeletion:
    """What a deletion matched and removed, per table (``deleted`` is all zeros on a dry run)."""

    matched: dict[str, int]
    deleted: dict[str, int]
    dry_run: bool


def _delete_filter_list(values: Any, name: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise DomainError(f"'{name}' must be a list of strings.", name)
    if len(values) > MAX_DELETE_FILTER_ITEMS:
        raise DomainError(
            f"'{name}' holds at most {MAX_DELETE_FILTER_ITEMS} items (got {len(values)}); "
            "delete in several calls.",
            name,
        )
    for value in values:
        if error := _string_error(value, name, MAX_ID_LENGTH):
            raise DomainError(f"Each item of {error}", name)
    return list(dict.fromkeys(values))


def _delete_bound(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise DomainError(f"'{name}' must be a date and time (ISO 8601).", name)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@transaction.atomic
def events_delete(
    *,
    project: Project,
    actor: Any = None,
    actor_label: str | None = None,
    event_ids: Sequence[str] | None = None,
    unit_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    kind: str = "all",
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
) -> EventDeletion:
    """Delete the project's stored events that match every given filter, and audit it.

    ``kind``: metric, exposure or all. Filters combine with AND; a list matches any of its
    items. ``since`` <= event timestamp < ``until``. ``names`` are metric event names: exposures
    have none, so a names filter matches no exposure (and is refused with ``kind="exposure"``).
    At least one filter is required, so that no call deletes everything by accident.
    Assignments stay: they are sticky state, not events. A dry run counts the matches and
    changes nothing (and is not audited); a deletion writes one AuditLog row ("events.delete":
    who, the filters, the counts).
    """
    if kind not in EVENT_TYPES:
        raise DomainError(f"'type' must be one of {', '.join(EVENT_TYPES)}.", "type")
    event_ids = _delete_filter_list(event_ids, "event_ids")
    unit_ids = _delete_filter_list(unit_ids, "unit_ids")
    names = _delete_filter_list(names, "names")
    since = _delete_bound(since, "since")
    until = _delete_bound(until, "until")
    if not (event_ids or unit_ids or names or since or until):
        raise DomainError(
            "Give at least one filter (event_ids, unit_ids, names, since or until): "
            "deleting every event of a project is not offered.",
            "filters",
        )
    if since is not None and until is not None and since >= until:
        raise DomainError("'since' must be before 'until'.", "until")
    if names and kind == "exposure":
        raise DomainError(
            "'names' are metric event names; exposures have none. Use type 'metric' or 'all'.",
            "names",
        )

    def matching(model: Any) -> Any:
        rows = model.objects.filter(project=project)
        if event_ids:
            rows = rows.filter(event_id__in=event_ids)
        if unit_ids:
            rows = rows.filter(unit_id__in=unit_ids)
        if since is not None:
            rows = rows.filter(ts__gte=since)
        if until is not None:
            rows = rows.filter(ts__lt=until)
        return rows

    querysets: dict[str, Any] = {}
    if kind in ("metric", "all"):
        metric_rows = matching(MetricEvent)
        querysets["metric"] = metric_rows.filter(name__in=names) if names else metric_rows
    if kind in ("exposure", "all") and not names:
        querysets["exposure"] = matching(Exposure)
    matched = {"metric": 0, "exposure": 0}
    deleted = {"metric": 0, "exposure": 0}
    for kind, rows in querysets.items():
        matched[kind] = rows.count()
        if not dry_run and matched[kind]:
            deleted[kind] = rows.delete()[0]
    if not dry_run:
        filters = {
            "event_ids": event_ids,
            "unit_ids": unit_ids,
            "names": names,
            "type": kind,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }
        audit_log_record(
            project=project,
            action="events.delete",
            target=project.slug,
            actor=actor,
            actor_label=actor_label,
            after={"filters": filters, "matched": matched, "deleted": deleted},
        )
    return EventDeletion(matched=matched, deleted=deleted, dry_run=dry_run)
