"""Celery tasks of flags: the beat applies due scheduled changes (every 15 s)."""

import logging

from celery import shared_task

from flags.services import scheduled_changes_apply

logger = logging.getLogger(__name__)
SCHEDULE_INTERVAL = 15.0  # seconds between the beat's looks for due scheduled changes


@shared_task(name="flags.apply_scheduled_changes", soft_time_limit=60, time_limit=90)
def apply_scheduled_changes() -> int:
    """Apply every pending scheduled change that is due; idempotent (applied rows are no
    longer pending) and safe with several workers (locked rows are skipped)."""
    applied = scheduled_changes_apply()
    if applied:
        logger.info("applied %s scheduled flag change(s)", applied)
    return applied
