"""Event retention and the event tables' partitions: a project's partitions made with it and
dropped with it, and the hourly maintenance (weeks ahead, expired weeks and rows).

PostgreSQL (the partitioned layout, assignments/partitions.py): the maintenance creates the
project's weekly partitions for this week and the next two (moving any of their rows out of the
default partition), drops whole weeks that ended before the retention's cut-off, and deletes
the expired rows of the default partitions and of the event-id ledger in chunks of
``CHUNK_ROWS`` (one short transaction each: row locks only). SQLite: the same retention by
chunked DELETEs of the expired rows. Events older than the retention are also refused at
ingestion (`assignments.services.validate`), so an id the ledger has forgotten can never let
its event in again.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from assignments import partitions
from assignments.models import Exposure, FlagExposure, MetricEvent
from assignments.signals import events_deleted
from core.queueing import send_quietly
from experiments.models import Project

logger = logging.getLogger(__name__)
CHUNK_ROWS = 10_000  # rows per DELETE statement (and transaction)
_EVENT_MODELS = (Exposure, FlagExposure, MetricEvent)
_ADVISORY_NAMESPACE = 0x61626163  # "abac": pg_try_advisory_lock(namespace, project id)


@dataclass
class MaintenanceReport:
    """What one project's maintenance did (or, on a dry run, would do)."""

    project_id: int
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0  # rows moved out of a default partition into a new week
    deleted: dict[str, int] = field(default_factory=dict)  # expired rows deleted, per table
    skipped: list[str] = field(default_factory=list)  # drops that gave up on a lock; next hour
    dry_run: bool = False
    unfinished: bool = False  # the time budget ran out with expired rows left: the next run

    @property
    def changed(self) -> bool:
        return bool(self.dropped or any(self.deleted.values()))

    def lines(self) -> list[str]:
        verb = "would " if self.dry_run else ""
        lines = [f"{verb}create {name}" for name in self.created]
        lines += [f"{verb}drop {name}" for name in self.dropped]
        lines += [f"{verb}delete {n} expired rows of {t}" for t, n in self.deleted.items() if n]
        if self.moved:
            lines.append(f"moved {self.moved} rows out of default partitions")
        lines += [f"skipped {name}: locked, retried next hour" for name in self.skipped]
        if self.unfinished:
            lines.append("time budget spent: the next run deletes the rest")
        return lines


# --- a project's partitions, with the project -------------------------------------------------


def project_partitions_prepare(*, project_id: int, using: str = "default") -> list[str]:
    """A new project's partitions (PostgreSQL's partitioned layout; nothing elsewhere), in the
    creating transaction: its own tables only, so creating a project stays cheap; its weekly
    partitions come from a maintenance queued once it commits (or the next hourly round).
    Returns the tables created."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if not partitions.partitioned(cursor):
            return []
        created = partitions.project_partitions_create(cursor, project_id).created
    transaction.on_commit(partial(_maintenance_queue, project_id), using=using, robust=True)
    return created


def _maintenance_queue(project_id: int) -> None:
    """Queue a project's maintenance; never raises into the caller (a broker outage leaves the
    weeks to the hourly round, and events land in the default partition meanwhile)."""
    from assignments.tasks import maintain_events

    unsent = f"event maintenance of new project {project_id} not queued"
    send_quietly(maintain_events, project_id, unsent=unsent)


def project_partitions_forget(*, project_id: int, using: str = "default") -> None:
    """A project being deleted: its events go at once (TRUNCATE of its own partitions, in the
    deleting transaction, so the cascade finds nothing to delete row by row); its empty tables
    are dropped after commit, or by the next maintenance (`orphan_partitions_drop`)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if not partitions.partitioned(cursor):
            return
        partitions.project_partitions_truncate(cursor, project_id)
    transaction.on_commit(lambda: _drop_quietly(project_id, using), using=using)


def _drop_quietly(project_id: int, using: str) -> None:
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            partitions.project_partitions_drop(cursor, project_id)
    except OperationalError as exc:  # a lock timeout: the maintenance drops them later
        logger.warning("partitions of deleted project %s kept for now: %s", project_id, exc)


def orphan_partitions_drop(*, dry_run: bool = False) -> list[str]:
    """Drop the partitions of projects that no longer exist (deleted while a lock was held, or
    outside the services). Returns the names (to be) dropped."""
    connection = connections["default"]
    dropped: list[str] = []
    with connection.cursor() as cursor:
        if not partitions.partitioned(cursor):
            return dropped
        existing = set(Project.objects.values_list("pk", flat=True))
        for project_id in sorted(partitions.project_ids_with_partitions(cursor) - existing):
            if dry_run:
                tables = (*partitions.EVENT_TABLES, partitions.LEDGER)
                dropped += [partitions.project_partition(t, project_id) for t in tables]
                continue
            try:
                with transaction.atomic():
                    dropped += partitions.project_partitions_drop(cursor, project_id)
            except OperationalError as exc:
                logger.warning("partitions of deleted project %s kept: %s", project_id, exc)
    return dropped


# --- the hourly maintenance -------------------------------------------------------------------


def event_storage_maintain(
    *,
    project: Project,
    now: datetime | None = None,
    dry_run: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    seconds: float | None = None,
) -> MaintenanceReport:
    """Bring one project's event storage up to date: weekly partitions ahead (PostgreSQL), and
    with a retention, expired weeks dropped and expired rows deleted. Idempotent; a second
    worker on the same project at once does nothing (an advisory lock). ``seconds``: stop
    deleting rows after about this long (the rest goes next time). Tells the analyses
    (`assignments.signals.events_deleted`) when events went."""
    now = now or timezone.now()
    days = project.event_retention_days
    cutoff = now - timedelta(days=days) if days is not None else None
    report = MaintenanceReport(project.pk, dry_run=dry_run)
    deadline = time.monotonic() + seconds if seconds is not None else None
    connection = connections["default"]
    with connection.cursor() as cursor:
        if partitions.partitioned(cursor):
            if _lock(cursor, project.pk):
                try:
                    _maintain_partitioned(cursor, report, now, cutoff, (chunk_rows, deadline))
                finally:
                    _unlock(cursor, project.pk)
            else:
                report.skipped.append(f"project {project.pk}: another worker maintains it")
        elif cutoff is not None:
            _expire_plain(report, cutoff, (chunk_rows, deadline))
    if report.changed and not dry_run:
        events_deleted.send(sender=MaintenanceReport, project_id=project.pk, deleted=report.deleted)
    return report


def _lock(cursor: Any, project_id: int) -> bool:
    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_ADVISORY_NAMESPACE, project_id])
    return bool(cursor.fetchone()[0])


def _unlock(cursor: Any, project_id: int) -> None:
    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_ADVISORY_NAMESPACE, project_id])


_Chunks = tuple[int, float | None]  # rows per DELETE, and the time.monotonic() to stop at


def _out_of_time(chunks: _Chunks) -> bool:
    return chunks[1] is not None and time.monotonic() >= chunks[1]


def _maintain_partitioned(
    cursor: Any, report: MaintenanceReport, now: datetime, cutoff: datetime | None, chunks: _Chunks
) -> None:
    pid = report.project_id
    if report.dry_run:
        report.created = _weeks_missing(cursor, pid, now)
    else:
        with transaction.atomic(), partitions.short_lock_wait(cursor):
            changes = partitions.weeks_create(cursor, pid, now=now)
        report.created, report.moved = changes.created, changes.moved
    if cutoff is None:
        return
    for _, name in partitions.weeks_expired(cursor, pid, cutoff):
        if report.dry_run:
            report.dropped.append(name)
            continue
        try:
            with transaction.atomic():
                partitions.week_drop(cursor, name)
        except OperationalError:
            report.skipped.append(name)
        else:
            report.dropped.append(name)
    for table in partitions.EVENT_TABLES:
        default = partitions.default_partition(table, pid)
        report.deleted[table] = _delete_expired(cursor, default, cutoff, chunks, report)
    ledger = partitions.project_partition(partitions.LEDGER, pid)
    report.deleted[partitions.LEDGER] = _delete_expired(cursor, ledger, cutoff, chunks, report)


def _weeks_missing(cursor: Any, project_id: int, now: datetime) -> list[str]:
    this_week = partitions.week_start(now)
    wanted = [this_week + partitions.WEEK * i for i in range(partitions.WEEKS_AHEAD + 1)]
    return [
        partitions.week_partition(table, project_id, monday)
        for table in partitions.EVENT_TABLES
        for monday in wanted
        if monday not in partitions.weeks_of(cursor, table, project_id)
    ]


def _delete_expired(
    cursor: Any, table: str, cutoff: datetime, chunks: _Chunks, report: MaintenanceReport
) -> int:
    """Delete ``table``'s rows stamped before ``cutoff``, a chunk of rows per statement, each in
    its own transaction (row locks only; the ledger's BRIN index on ts finds them)."""
    if partitions.to_regclass(cursor, table) is None:
        return 0
    if report.dry_run:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE ts < %s", [cutoff])
        return int(cursor.fetchone()[0])
    chunk, deleted = chunks[0], 0
    while True:
        if _out_of_time(chunks):
            report.unfinished = True
            return deleted
        with transaction.atomic():
            cursor.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE ts < %s LIMIT %s))",
                [cutoff, chunk],
            )
            done = cursor.rowcount
        deleted += done
        if done < chunk:
            return deleted


def _expire_plain(report: MaintenanceReport, cutoff: datetime, chunks: _Chunks) -> None:
    """Plain tables (SQLite): delete the project's expired rows, a chunk of rows at a time."""
    chunk = chunks[0]
    for model in _EVENT_MODELS:
        expired = model.objects.filter(project_id=report.project_id, ts__lt=cutoff)
        table = model._meta.db_table
        if report.dry_run:
            report.deleted[table] = expired.count()
            continue
        report.deleted[table] = 0
        while True:
            if _out_of_time(chunks):
                report.unfinished = True
                break
            with transaction.atomic():
                done = model.objects.filter(pk__in=expired.values("pk")[:chunk]).delete()[0]
            report.deleted[table] += done
            if done < chunk:
                break
