"""Outgoing messages whose task never reached a worker (signed webhooks, notifications).

Both are stored first and handed to a Celery task once the caller's transaction commits; when
the broker is down then (or the message is lost), the row stays ``pending`` with no attempt.
The beat's sweeps (``analysis.resend_webhooks``, ``notifications.resend_pending``) call
`never_attempted_resend` every few minutes: such a row is queued again once it is
``RESEND_AFTER`` old, and marked failed with a note once it is ``GIVE_UP_AFTER`` old (a
rollback's message a day late would mislead more than it helps). A row being retried
(attempts > 0) is Celery's, not the sweep's.
"""

from collections.abc import Callable
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

RESEND_AFTER = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(days=1)
NEVER_QUEUED = (
    "Never sent: it could not be handed to a worker for a day (the task broker was unavailable)."
)


def never_attempted_resend(
    never: QuerySet,
    enqueue: Callable[[int], None],
    failed: str,
    *,
    now: datetime | None = None,
) -> tuple[int, int]:
    """``never``: the pending rows with no attempt (``created_at``, ``status``, ``last_error``
    columns). Queues again (``enqueue(pk)``, which must not raise) those older than
    ``RESEND_AFTER``, marks ``failed`` those older than ``GIVE_UP_AFTER``; returns (queued
    again, given up)."""
    now = now or timezone.now()
    given_up = never.filter(created_at__lt=now - GIVE_UP_AFTER).update(
        status=failed, last_error=NEVER_QUEUED
    )
    stale = never.filter(created_at__lt=now - RESEND_AFTER).order_by("pk")
    ids = list(stale.values_list("pk", flat=True))
    for pk in ids:
        enqueue(pk)
    return len(ids), given_up
