"""The Celery tasks of notifications: sending one stored notification (Slack or email),
retried with exponential backoff like analysis.deliver_webhook, and the beat's sweep that
queues again the deliveries whose task never reached a worker."""

import logging

from celery import shared_task
from django.conf import settings

from notifications.models import DeliveryStatus
from notifications.sending import DeliveryError, notification_deliver, notification_give_up
from notifications.services import notification_deliveries_resend

logger = logging.getLogger(__name__)


@shared_task(
    name="notifications.deliver",
    bind=True,
    soft_time_limit=30,
    time_limit=60,
    max_retries=8,
    acks_late=True,
)
def deliver(self, delivery_id: int) -> bool:  # noqa: ANN001
    """One attempt per execution; retried with exponential backoff (ABACUS_WEBHOOK_RETRY_SECONDS
    x 2^retry, at most 15 minutes apart), then marked failed. False: failed (refused by
    core.egress, or given up)."""
    try:
        delivery = notification_deliver(delivery_id=delivery_id)
    except DeliveryError as exc:
        if self.request.retries >= self.max_retries:
            notification_give_up(delivery_id=delivery_id)
            logger.error("notification %s failed for good: %s", delivery_id, exc)
            return False
        base = float(getattr(settings, "ABACUS_WEBHOOK_RETRY_SECONDS", 10))
        raise self.retry(exc=exc, countdown=min(900.0, base * 2**self.request.retries)) from exc
    return delivery.status == DeliveryStatus.SENT


@shared_task(name="notifications.resend_pending", soft_time_limit=60, time_limit=90)
def resend_pending() -> list[int]:
    """`notification_deliveries_resend`: [queued again, given up]."""
    queued, given_up = notification_deliveries_resend()
    if queued or given_up:
        logger.warning("notifications never queued: %d queued again, %d given up", queued, given_up)
    return [queued, given_up]
