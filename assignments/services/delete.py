"""Removing bad events: a project admin's filtered, audited deletion."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from assignments.models import Exposure, FlagExposure, MetricEvent
from assignments.partitions import LEDGER
from assignments.services.validate import MAX_ID_LENGTH, _string_error
from assignments.signals import events_deleted
from core.errors import DomainError
from experiments.models import Project
from experiments.services import audit_log_record

# The tables a deletion covers, by the ``type`` that selects them ("all": every one).
EVENT_TABLES = {"metric": MetricEvent, "exposure": Exposure, "flag_exposure": FlagExposure}
EVENT_TYPES = (*EVENT_TABLES, "all")
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


@dataclass(frozen=True)
class _DeleteFilters:
    """Checked filters of a deletion (lists without repeats, bounds timezone-aware)."""

    event_ids: list[str]
    unit_ids: list[str]
    names: list[str]
    since: datetime | None
    until: datetime | None


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

    ``kind``: metric, exposure (of experiments), flag_exposure or all. Filters combine with AND;
    a list matches any of its items. ``since`` <= event timestamp < ``until``. ``names`` are
    metric event names: exposures and flag exposures have none, so a names filter matches
    neither (and is refused with ``kind="exposure"`` or ``"flag_exposure"``). Flags' evaluation
    counts (`flags.models.FlagUsage`) are not reduced: they count evaluations, not stored events.
    At least one filter is required, so that no call deletes everything by accident.
    Assignments stay: they are sticky state, not events. A dry run counts the matches and
    changes nothing (and is not audited); a deletion writes one AuditLog row ("events.delete":
    who, the filters, the counts).
    """
    filters = _delete_filters(kind, event_ids, unit_ids, names, since, until)
    querysets = _matching_events(project, kind, filters)
    matched = dict.fromkeys(EVENT_TABLES, 0)
    deleted = dict.fromkeys(EVENT_TABLES, 0)
    for table, rows in querysets.items():
        matched[table] = rows.count()
        if not dry_run and matched[table]:
            _ledger_forget(project, rows)
            deleted[table] = rows.delete()[0]
    if not dry_run and any(deleted.values()):
        events_deleted.send(sender=EventDeletion, project_id=project.pk, deleted=deleted)
    if not dry_run:
        audit_log_record(
            project=project,
            action="events.delete",
            target=project.slug,
            actor=actor,
            actor_label=actor_label,
            after={
                "filters": _audited_filters(filters, kind),
                "matched": matched,
                "deleted": deleted,
            },
        )
    return EventDeletion(matched=matched, deleted=deleted, dry_run=dry_run)


def _ledger_forget(project: Project, rows: Any) -> None:
    """PostgreSQL: the deleted events' ids leave the event-id ledger too, so a corrected event
    sent again with the same id is stored, as it is on SQLite (no ledger: the row was the key)."""
    if connection.vendor != "postgresql":
        return
    ids, params = rows.values("event_id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {LEDGER} WHERE project_id = %s AND event_id IN ({ids})",
            [project.pk, *params],
        )


def _delete_filters(
    kind: str,
    event_ids: Sequence[str] | None,
    unit_ids: Sequence[str] | None,
    names: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> _DeleteFilters:
    """The checked filters; `DomainError` naming the field for the first one that is wrong."""
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
    if names and kind in ("exposure", "flag_exposure"):
        raise DomainError(
            "'names' are metric event names; exposures and flag exposures have none. "
            "Use type 'metric' or 'all'.",
            "names",
        )
    return _DeleteFilters(event_ids, unit_ids, names, since, until)


def _matching_events(project: Project, kind: str, filters: _DeleteFilters) -> dict[str, Any]:
    """The querysets of matching events, by type (only metric events match a names filter)."""

    def matching(model: Any) -> Any:
        rows = model.objects.filter(project=project)
        if filters.event_ids:
            rows = rows.filter(event_id__in=filters.event_ids)
        if filters.unit_ids:
            rows = rows.filter(unit_id__in=filters.unit_ids)
        if filters.since is not None:
            rows = rows.filter(ts__gte=filters.since)
        if filters.until is not None:
            rows = rows.filter(ts__lt=filters.until)
        return rows

    querysets: dict[str, Any] = {}
    for table, model in EVENT_TABLES.items():
        if kind not in (table, "all"):
            continue
        if table == "metric":
            rows = matching(model)
            querysets[table] = rows.filter(name__in=filters.names) if filters.names else rows
        elif not filters.names:
            querysets[table] = matching(model)
    return querysets


def _audited_filters(filters: _DeleteFilters, kind: str) -> dict[str, Any]:
    return {
        "event_ids": filters.event_ids,
        "unit_ids": filters.unit_ids,
        "names": filters.names,
        "type": kind,
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
    }
