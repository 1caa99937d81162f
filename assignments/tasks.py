"""Celery tasks of assignments: the hourly event-storage maintenance (weekly partitions ahead,
retention), one task per project fanned out by the beat's scheduler task."""

import logging

from celery import shared_task

from assignments.services import event_storage_maintain, orphan_partitions_drop
from experiments.models import Project

logger = logging.getLogger(__name__)
MAINTENANCE_INTERVAL = 3600.0  # seconds between the beat's maintenance rounds
# The ingest pool's slots are never held long (docs/operations.md section 17): a project's
# maintenance stops deleting after this long and the next hour goes on.
DELETE_BUDGET_SECONDS = 180.0


@shared_task(name="assignments.schedule_event_maintenance", soft_time_limit=120, time_limit=180)
def schedule_event_maintenance() -> int:
    """Drop deleted projects' leftover partitions, then queue one maintenance per project."""
    dropped = orphan_partitions_drop()
    if dropped:
        logger.info("dropped partitions of deleted projects: %s", ", ".join(dropped))
    project_ids = list(Project.objects.order_by("pk").values_list("pk", flat=True))
    for project_id in project_ids:
        maintain_events.delay(project_id)
    return len(project_ids)


@shared_task(name="assignments.maintain_events", soft_time_limit=240, time_limit=300)
def maintain_events(project_id: int) -> list[str]:
    """One project's event storage brought up to date (`event_storage_maintain`); idempotent,
    and a second worker on the same project does nothing."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return []
    report = event_storage_maintain(project=project, seconds=DELETE_BUDGET_SECONDS)
    lines = report.lines()
    if lines:
        logger.info("event storage of project %s: %s", project.slug, "; ".join(lines))
    return lines
