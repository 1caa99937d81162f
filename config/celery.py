"""The Celery app and the beat schedule."""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

from core import heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

RESEND_SWEEP_SECONDS = 300.0  # how often undelivered webhooks and notifications are looked at

app = Celery("abacus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["analysis", "assignments", "flags", "notifications", "releases"])


@worker_init.connect
@worker_process_init.connect
def settle_heap(**kwargs: object) -> None:
    """The worker's startup objects left out of garbage collection (core/heap.py): in the
    worker before its pool forks, and in each pool process (or the solo pool's worker)."""
    heap.settle()


@app.on_after_finalize.connect
def setup_periodic_tasks(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings

    from assignments.tasks import MAINTENANCE_INTERVAL

    sender.add_periodic_task(
        float(settings.ABACUS_ANALYSIS_INTERVAL),
        sender.signature("analysis.schedule_running"),
        name="analysis: refresh every running experiment",
        expires=float(settings.ABACUS_ANALYSIS_INTERVAL),
    )
    # Holdouts: the long-term comparison of each running holdout (and an ended one's last).
    sender.add_periodic_task(
        float(settings.ABACUS_HOLDOUT_INTERVAL),
        sender.signature("analysis.schedule_holdouts"),
        name="analysis: compare every running holdout",
        expires=float(settings.ABACUS_HOLDOUT_INTERVAL),
    )
    # Scheduled flag changes (turn on, move a rollout) land within this many seconds of their time.
    sender.add_periodic_task(
        15.0,
        sender.signature("flags.apply_scheduled_changes"),
        name="flags: apply due scheduled changes",
        expires=15.0,
    )
    # Event storage (assignments/tasks.py): weekly partitions ahead and each project's retention.
    sender.add_periodic_task(
        MAINTENANCE_INTERVAL,
        sender.signature("assignments.schedule_event_maintenance"),
        name="assignments: event partitions and retention",
        expires=MAINTENANCE_INTERVAL,
    )
    # Webhooks and notifications stored while the broker was down (or whose message was lost):
    # queued again after 10 minutes, given up after a day (analysis/webhooks.py,
    # notifications/services.py).
    for task in ("analysis.resend_webhooks", "notifications.resend_pending"):
        sender.add_periodic_task(
            RESEND_SWEEP_SECONDS, sender.signature(task), name=task, expires=60.0
        )
    # Guarded releases: due analyses (each release on its own cadence) and scheduled starts.
    tick = float(settings.ABACUS_RELEASE_TICK_SECONDS)
    sender.add_periodic_task(
        tick,
        sender.signature("releases.tick"),
        name="releases: start due releases, queue due analyses",
        expires=tick,
    )
