"""Writes on the service hot path: sticky assignment and batch event ingestion."""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from assignments.features import evaluate
from assignments.models import Assignment, Exposure, MetricEvent
from assignments.selectors import ProjectSpecs, project_specs
from config.api import DomainError
from experiments.models import ExperimentStatus, Project

MAX_BATCH = 10_000
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_PROPERTIES_BYTES = 4096


# --- assignment -----------------------------------------------------------------------------


def _control(spec: Any) -> Any:
    return next(v for v in spec.variants if v.is_control)


def _variant(spec: Any, key: str) -> Any:
    return next((v for v in spec.variants if v.key == key), None)


def assignments_get_or_create(
    *,
    project: Project,
    units: Sequence[tuple[str, Mapping[str, Any]]],
    experiment_keys: Sequence[str] | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """The variant of each unit in each requested experiment, stored on first sight (sticky).

    Running experiments assign by hashing (or return the stored assignment); paused and
    rolled-back experiments give everyone control without storing anything; a concluded
    experiment that shipped a variant gives everyone that variant. Units not in an experiment
    (targeting, coverage, layer) are omitted for it.
    """
    specs = project_specs(project)
    if experiment_keys is None:
        keys = list(specs.specs)
    else:
        unknown = [k for k in experiment_keys if k not in specs.specs]
        if unknown:
            raise DomainError(
                f"Unknown or draft experiment(s): {', '.join(unknown)}.", "experiments"
            )
        keys = list(experiment_keys)
    running = [k for k in keys if specs.statuses[k] == ExperimentStatus.RUNNING]
    unit_ids = [unit_id for unit_id, _ in units]
    stored = _stored_assignments(specs, running, unit_ids)
    results: list[dict[str, dict[str, Any]]] = []
    new_rows: list[Assignment] = []
    for unit_id, attributes in units:
        answer: dict[str, dict[str, Any]] = {}
        for key in keys:
            spec = specs.specs[key]
            status = specs.statuses[key]
            if status == ExperimentStatus.RUNNING:
                variant_key = stored.get((key, unit_id))
                if variant_key is None:
                    attrs = {**attributes, spec.hash_attribute: unit_id}
                    variant_key = evaluate(spec, attrs)
                    if variant_key is None:
                        continue
                    new_rows.append(
                        Assignment(
                            experiment_id=specs.experiment_ids[key],
                            unit_id=unit_id,
                            variant_id=specs.variant_ids[(key, variant_key)],
                            phase=spec.phase,
                        )
                    )
                    stored[(key, unit_id)] = variant_key
                variant = _variant(spec, variant_key)
                answer[key] = {"variant": variant.key, "value": variant.value}
            elif status == ExperimentStatus.CONCLUDED and spec.shipped_variant:
                variant = _variant(spec, spec.shipped_variant)
                answer[key] = {
                    "variant": variant.key,
                    "value": variant.value,
                    "in_experiment": False,
                }
            else:
                control = _control(spec)
                answer[key] = {
                    "variant": control.key,
                    "value": control.value,
                    "in_experiment": False,
                }
        results.append(answer)
    if new_rows:
        Assignment.objects.bulk_create(new_rows, ignore_conflicts=True)
        # Another request may have assigned the same unit first: the stored row wins.
        winners = _stored_assignments(specs, running, list({row.unit_id for row in new_rows}))
        for (unit_id, _), answer in zip(units, results, strict=True):
            for key in running:
                won = winners.get((key, unit_id))
                if won is not None and key in answer and answer[key]["variant"] != won:
                    variant = _variant(specs.specs[key], won)
                    answer[key] = {"variant": variant.key, "value": variant.value}
    return results


def _stored_assignments(
    specs: ProjectSpecs, keys: Sequence[str], unit_ids: Sequence[str]
) -> dict[tuple[str, str], str]:
    if not keys or not unit_ids:
        return {}
    by_id = {specs.experiment_ids[k]: k for k in keys}
    variant_keys = {vid: vkey for (_, vkey), vid in specs.variant_ids.items()}
    rows = Assignment.objects.filter(
        experiment_id__in=list(by_id), unit_id__in=list(unit_ids)
    ).values_list("experiment_id", "unit_id", "variant_id")
    return {(by_id[e], u): variant_keys[v] for e, u, v in rows}


# --- ingestion ------------------------------------------------------------------------------


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, index: int, field_name: str, message: str) -> None:
        self.rejected.append({"index": index, "field": field_name, "message": message})


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.utc)
    return parsed


def _check_id(event: Mapping[str, Any], name: str, limit: int = MAX_ID_LENGTH) -> str | None:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        return f"'{name}' is required and must be a non-empty string."
    if len(value) > limit:
        return f"'{name}' is longer than {limit} characters."
    return None


def _validate_event(event: Any, specs: ProjectSpecs) -> tuple[str, str] | Exposure | MetricEvent:
    """The model row to store, or (field, message) saying why the event is rejected."""
    if not isinstance(event, Mapping):
        return ("event", "Each event must be a JSON object.")
    for name in ("event_id", "unit_id"):
        if error := _check_id(event, name):
            return (name, error)
    ts = _parse_ts(event.get("timestamp"))
    if ts is None:
        return ("timestamp", "'timestamp' is required, as ISO 8601 (e.g. 2026-11-29T10:00:00Z).")
    kind = event.get("type")
    if kind == "exposure":
        if error := _check_id(event, "experiment"):
            return ("experiment", error)
        key = event["experiment"]
        if key not in specs.experiment_ids:
            return ("experiment", f"Unknown experiment '{key}' (or still a draft).")
        if error := _check_id(event, "variant"):
            return ("variant", error)
        variant_id = specs.variant_ids.get((key, event["variant"]))
        if variant_id is None:
            return ("variant", f"Experiment '{key}' has no variant '{event['variant']}'.")
        return Exposure(
            event_id=event["event_id"],
            experiment_id=specs.experiment_ids[key],
            variant_id=variant_id,
            unit_id=event["unit_id"],
            ts=ts,
        )
    if kind == "metric":
        if error := _check_id(event, "name", MAX_NAME_LENGTH):
            return ("name", error)
        value = event.get("value", 1.0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return ("value", "'value' must be a finite number.")
        properties = event.get("properties")
        if properties is not None:
            if not isinstance(properties, dict):
                return ("properties", "'properties' must be a JSON object.")
            if len(json.dumps(properties)) > MAX_PROPERTIES_BYTES:
                return ("properties", f"'properties' is larger than {MAX_PROPERTIES_BYTES} bytes.")
        return MetricEvent(
            event_id=event["event_id"],
            name=event["name"],
            unit_id=event["unit_id"],
            value=float(value),
            ts=ts,
            properties=properties,
        )
    return ("type", "'type' must be 'exposure' or 'metric'.")


def events_ingest(*, project: Project, events: Sequence[Any]) -> IngestResult:
    """Validate each event; store the valid ones idempotently by (project, event_id).

    Valid events are committed even when others in the batch are rejected. Duplicates (an
    event_id seen before, or twice in the batch) are counted, not stored again.
    """
    if len(events) > MAX_BATCH:
        raise DomainError(
            f"A batch holds at most {MAX_BATCH} events (got {len(events)}).", "events"
        )
    specs = project_specs(project)
    result = IngestResult()
    exposures: dict[str, Exposure] = {}
    metric_events: dict[str, MetricEvent] = {}
    for index, event in enumerate(events):
        row = _validate_event(event, specs)
        if isinstance(row, tuple):
            result.reject(index, *row)
            continue
        row.project_id = project.pk
        target = exposures if isinstance(row, Exposure) else metric_events
        if row.event_id in exposures or row.event_id in metric_events:
            result.duplicates += 1
            continue
        target[row.event_id] = row
    with transaction.atomic():
        inserted = _insert_new(Exposure, project, exposures) + _insert_new(
            MetricEvent, project, metric_events
        )
    result.accepted = inserted
    result.duplicates += len(exposures) + len(metric_events) - inserted
    return result


def _insert_new(model: type, project: Project, rows: dict[str, Any]) -> int:
    """Insert rows whose event_id is new for the project; return how many were inserted."""
    if not rows:
        return 0
    if connection.vendor == "postgresql":
        from assignments.copy import copy_insert

        return copy_insert(model, list(rows.values()))
    existing = set(
        model.objects.filter(project=project, event_id__in=list(rows)).values_list(
            "event_id", flat=True
        )
    )
    fresh = [row for event_id, row in rows.items() if event_id not in existing]
    model.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=1000)
    return len(fresh)
