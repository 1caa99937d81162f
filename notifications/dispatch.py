"""The one place that hands notifications to the Celery task (notifications.tasks).

The services call this instead of importing the task, so the task imports the services and
nothing imports back; the task object is imported when a message is sent.
"""

from core.queueing import send_quietly


def enqueue_delivery(delivery_id: int) -> None:
    """Send ``notifications.deliver`` for a stored delivery. Runs after the caller's
    transaction commits, so it must not raise into it: a broker outage leaves the delivery
    pending (logged), and the release or analysis that triggered it carries on."""
    from notifications.tasks import deliver

    unsent = f"notification delivery {delivery_id} not queued; it stays pending"
    send_quietly(deliver, delivery_id, unsent=unsent)
