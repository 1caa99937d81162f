"""Event validation, row by row, without model instances or ``full_clean``: the API checks the
request's shape, `events_validate` every rule of every event, and the result is a batch of plain
tuples that the storage paths (`assignments.services.ingest`) take as is.

Three kinds of event: experiment exposures (``"type": "exposure"`` with ``"experiment"``), flag
exposures (``"type": "exposure"`` with ``"flag"`` and no ``"experiment"``) and metric events."""

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from assignments.selectors import ProjectSpecs
from experiments.filters import MAX_PROPERTY_NAME_LENGTH
from experiments.models import PRODUCTION, Environment, ExperimentStatus
from flags.models import Flag

MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
# A metric event's "properties", which metrics may filter on and take values from
# (docs/analysts.md "Metrics from event properties"): a JSON object of at most this many bytes,
# nested at most this deep (the object itself is 1), with at most this many keys in all (nested
# objects' too), each no longer than a metric's property name may be.
MAX_PROPERTIES_BYTES = 4096
MAX_PROPERTIES_DEPTH = 3
MAX_PROPERTY_KEYS = 100
# An exposure's "attributes" (the unit's attributes when exposed, for dimension breakdowns): a
# JSON object of at most this many bytes, nested at most this deep (the object itself is 1).
MAX_ATTRIBUTES_BYTES = 4096
MAX_ATTRIBUTES_DEPTH = 3
MAX_TIMESTAMP_LENGTH = 64
# Events may arrive late (any time after 1970) but not from the future: a client clock more
# than this far ahead is a bug the client should hear about, not data for a future window.
MAX_CLOCK_SKEW = timedelta(days=1)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# A numeric timestamp is Unix seconds; one past 3000-01-01 is most likely milliseconds.
LATEST_EPOCH_SECONDS = int(datetime(3000, 1, 1, tzinfo=UTC).timestamp())
_RUNNING = ExperimentStatus.RUNNING
_LARGEST_DOUBLE = sys.float_info.max


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
ExposureRow = tuple[str, int, int, str, datetime, str | None]  # event_id, experiment, variant,
# unit, ts, attributes as JSON text
MetricRow = tuple[str, str, str, float, datetime, str | None]  # event_id, name, unit, value, ts,
# properties as JSON text
FlagExposureRow = tuple[str, int, int, str, str, datetime]  # event_id, environment, flag,
# variation key, unit, ts


class FlagTargets:
    """What flag exposures name: the project's flags (archived ones too: late events of a flag
    archived since are still accepted) and their variation keys, and the environment the events
    are recorded in. Loaded on the first flag exposure of a batch (one query each), so batches
    without any cost nothing."""

    def __init__(self, project_id: int, environment_id: int | None) -> None:
        self.project_id = project_id
        self._environment_id = environment_id
        self._flags: dict[str, tuple[int, frozenset[str]]] | None = None

    @property
    def environment_id(self) -> int:
        """The events' environment: the API key's; production for keys without one."""
        if self._environment_id is None:
            self._environment_id = (
                Environment.objects.filter(project_id=self.project_id, key=PRODUCTION)
                .values_list("pk", flat=True)
                .get()
            )
        return self._environment_id

    def flag(self, key: str) -> tuple[int, frozenset[str]] | None:
        """The flag's id and variation keys, or None when the project has no such flag."""
        if self._flags is None:
            self._flags = {
                key: (pk, frozenset(v.get("key") for v in variations if isinstance(v, dict)))
                for key, pk, variations in Flag.objects.filter(
                    project_id=self.project_id
                ).values_list("key", "pk", "variations")
            }
        return self._flags.get(key)


@dataclass
class EventBatch:
    """A validated batch: new rows keyed by event_id (in-batch duplicates already dropped)."""

    exposures: dict[str, ExposureRow] = field(default_factory=dict)
    metrics: dict[str, MetricRow] = field(default_factory=dict)
    flag_exposures: dict[str, FlagExposureRow] = field(default_factory=dict)
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


@dataclass(frozen=True)
class _Window:
    """The timestamps a batch accepts: up to ``latest``; from ``earliest`` when the project
    keeps events ``retention_days`` (older ones would be dropped within the hour, and the
    event-id ledger forgets their ids: an old event must never come in again)."""

    latest: datetime
    earliest: datetime = EARLIEST_TIMESTAMP
    retention_days: int | None = None

    @classmethod
    def at(cls, now: datetime, retention_days: int | None) -> "_Window":
        if retention_days is None:
            return cls(now + MAX_CLOCK_SKEW)
        return cls(now + MAX_CLOCK_SKEW, now - timedelta(days=retention_days), retention_days)


def _timestamp(value: Any, window: _Window) -> datetime | str:
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
        if ts < window.earliest:
            return (
                f"'timestamp' is older than the project's event retention "
                f"({window.retention_days} days): events before "
                f"{window.earliest:%Y-%m-%dT%H:%M:%SZ} are not kept."
            )
        if ts > window.latest:
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
    text = _object_json(value, "properties", MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH)
    if text.__class__ is str and (error := _properties_error(value)):
        return (error,)
    return text


def _properties_error(value: dict[str, Any]) -> str | None:
    """Why properties no deeper than MAX_PROPERTIES_DEPTH are unacceptable: too many keys, a
    key too long, or an integer beyond a double's range (the analysis compares numbers as
    doubles on every database). None when they are fine."""
    keys = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if item.__class__ is dict:
            keys += len(item)
            for key in item:
                if len(key) > MAX_PROPERTY_NAME_LENGTH:
                    return (
                        f"'properties' key '{key[:40]}...' is longer than "
                        f"{MAX_PROPERTY_NAME_LENGTH} characters."
                    )
            children = item.values()
        else:
            children = item
        for child in children:
            if child.__class__ is dict or child.__class__ is list:
                stack.append(child)
            elif child.__class__ is int and not -_LARGEST_DOUBLE <= child <= _LARGEST_DOUBLE:
                return "'properties' must hold numbers within a double's range."
    if keys > MAX_PROPERTY_KEYS:
        return (
            f"'properties' has {keys} keys (nested objects' included); the limit is "
            f"{MAX_PROPERTY_KEYS}."
        )
    return None


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether objects and arrays nest more than ``depth`` levels (a flat object is 1)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if item.__class__ is dict else item
        for child in children:
            if child.__class__ is dict or child.__class__ is list:
                if level + 1 > depth:
                    return True
                stack.append((child, level + 1))
    return False


def _object_json(
    value: Any, name: str, max_bytes: int, max_depth: int | None = None
) -> str | None | tuple[str]:
    """A JSON object field as JSON text (None when absent), or ``(message,)`` when it is not an
    object, nests deeper than ``max_depth``, holds what JSON cannot or is over ``max_bytes``."""
    if value is None:
        return None
    if value.__class__ is not dict:
        return (f"'{name}' must be a JSON object.",)
    if max_depth is not None and _deeper_than(value, max_depth):
        return (f"'{name}' nests objects and arrays more than {max_depth} levels deep.",)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode())
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return (f"'{name}' must hold finite numbers and valid Unicode strings only.",)
    if size > max_bytes:
        return (f"'{name}' is {size} bytes as JSON; the limit is {max_bytes}.",)
    if "\\u0000" in text:
        return (f"'{name}' must not contain NUL characters.",)
    return text


class _Rejected(Exception):
    """An event's first problem: the field it names and what is wrong with it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def events_validate(
    *,
    specs: ProjectSpecs,
    events: Sequence[Any],
    flags: FlagTargets | None = None,
    retention_days: int | None = None,
) -> tuple[EventBatch, IngestResult]:
    """Check every event; return the rows to store and the result so far (rejections and
    in-batch duplicates). The first problem of an event names its field. ``flags``: what flag
    exposures may name (without it, a flag exposure is rejected as an unknown flag).
    ``retention_days``: the project's event retention (older events are rejected)."""
    batch = EventBatch()
    result = IngestResult()
    window = _Window.at(timezone.now(), retention_days)
    bound = max_event_value()
    exposures = batch.exposures
    metrics = batch.metrics
    flag_exposures = batch.flag_exposures
    for index, event in enumerate(events):
        try:
            event_id, kind, unit_id, ts = _event_envelope(event, window)
            if kind == "exposure":
                if "experiment" not in event and "flag" in event:
                    kind = "flag"
                    flag_id, variation = _flag_exposure_target(event, flags)
                else:
                    key, experiment_id, variant_id = _exposure_target(event, specs)
                    attributes = _exposure_attributes(event)
            else:
                name, value, properties = _metric_fields(event, bound)
        except _Rejected as rejected:
            result.reject(index, rejected.field_name, rejected.message)
            continue
        if event_id in exposures or event_id in metrics or event_id in flag_exposures:
            result.duplicates += 1
        elif kind == "exposure":
            exposures[event_id] = (event_id, experiment_id, variant_id, unit_id, ts, attributes)
            _note_exposure(specs, batch, result, index, key, experiment_id, ts)
        elif kind == "flag":
            row = (event_id, flags.environment_id, flag_id, variation, unit_id, ts)
            flag_exposures[event_id] = row
        else:
            metrics[event_id] = (event_id, name, unit_id, value, ts, properties)
    return batch, result


def _event_envelope(event: Any, window: _Window) -> tuple[str, str, str, datetime]:
    """The fields every event has, checked in this order: event_id, type, unit_id, timestamp."""
    if event.__class__ is not dict:
        raise _Rejected("event", "Each event must be a JSON object.")
    event_id = event.get("event_id")
    if error := _string_error(event_id, "event_id", MAX_ID_LENGTH):
        raise _Rejected("event_id", error)
    kind = event.get("type")
    if kind != "exposure" and kind != "metric":
        raise _Rejected("type", "'type' must be 'exposure' or 'metric'.")
    unit_id = event.get("unit_id")
    if error := _string_error(unit_id, "unit_id", MAX_ID_LENGTH):
        raise _Rejected("unit_id", error)
    ts = _timestamp(event.get("timestamp"), window)
    if ts.__class__ is str:
        raise _Rejected("timestamp", ts)
    return event_id, kind, unit_id, ts


def _exposure_target(event: dict[str, Any], specs: ProjectSpecs) -> tuple[str, int, int]:
    """An exposure's experiment key, experiment id and variant id."""
    key = event.get("experiment")
    if key is None:
        raise _Rejected("experiment", "'experiment' is required ('flag' for a flag exposure).")
    if error := _string_error(key, "experiment", MAX_NAME_LENGTH):
        raise _Rejected("experiment", error)
    experiment_id = specs.experiment_ids.get(key)
    if experiment_id is None:
        raise _Rejected("experiment", f"Unknown experiment '{key}' (or still a draft).")
    variant = event.get("variant")
    variant_id = specs.variant_ids.get((key, variant)) if variant.__class__ is str else None
    if variant_id is None:
        if error := _string_error(variant, "variant", MAX_NAME_LENGTH):
            raise _Rejected("variant", error)
        raise _Rejected("variant", f"Experiment '{key}' has no variant '{variant}'.")
    return key, experiment_id, variant_id


def _exposure_attributes(event: dict[str, Any]) -> str | None:
    """An exposure's attributes as JSON text (None when absent)."""
    if "attributes" not in event:
        return None
    attributes = _object_json(
        event["attributes"], "attributes", MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH
    )
    if attributes.__class__ is tuple:
        raise _Rejected("attributes", attributes[0])
    return attributes


def _flag_exposure_target(event: dict[str, Any], flags: FlagTargets | None) -> tuple[int, str]:
    """A flag exposure's flag id and variation key."""
    key = event.get("flag")
    if error := _string_error(key, "flag", MAX_NAME_LENGTH):
        raise _Rejected("flag", error)
    target = flags.flag(key) if flags is not None else None
    if target is None:
        raise _Rejected("flag", f"Unknown flag '{key}'.")
    flag_id, variations = target
    variation = event.get("variation")
    if variation.__class__ is not str or variation not in variations:
        if error := _string_error(variation, "variation", MAX_NAME_LENGTH):
            raise _Rejected("variation", error)
        raise _Rejected("variation", f"Flag '{key}' has no variation '{variation}'.")
    return flag_id, variation


def _note_exposure(
    specs: ProjectSpecs,
    batch: EventBatch,
    result: IngestResult,
    index: int,
    key: str,
    experiment_id: int,
    ts: datetime,
) -> None:
    """A new exposure stamped before its experiment's current phase is stored but ignored; one
    of a running experiment may become its unit's assignment (its phase is noted)."""
    phase_start = specs.phase_starts.get(key)
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
    if specs.statuses[key] == _RUNNING:
        batch.running_phases[experiment_id] = specs.phases.get(key, 0)


def _metric_fields(event: dict[str, Any], bound: float) -> tuple[str, float, str | None]:
    """A metric event's name, value (1.0 when absent) and properties as JSON text."""
    name = event.get("name")
    if error := _string_error(name, "name", MAX_NAME_LENGTH):
        raise _Rejected("name", error)
    value = event.get("value")
    value = 1.0 if value is None else _metric_value(value, bound)
    if value.__class__ is str:
        raise _Rejected("value", value)
    properties = _properties_json(event.get("properties"))
    if properties.__class__ is tuple:
        raise _Rejected("properties", properties[0])
    return name, value, properties
