"""Thin Celery tasks of the release monitor: the tick (beat) and one analysis per release."""

import logging

from celery import shared_task

from .dispatch import enqueue_analysis
from .monitor import release_analyze, releases_tick

logger = logging.getLogger(__name__)


@shared_task(name="releases.tick", soft_time_limit=50, time_limit=60, ignore_result=True)
def tick() -> int:
    """Start due scheduled releases and queue the analyses that are due."""
    due = releases_tick()
    for release_id in due:
        enqueue_analysis(release_id)
    return len(due)


@shared_task(
    name="releases.analyze", soft_time_limit=240, time_limit=300, acks_late=True, ignore_result=True
)
def analyze(release_id: int) -> str | None:
    check = release_analyze(release_id)
    return check.action if check else None
