"""The one place that hands work to the Celery tasks (analysis.tasks).

Services and webhooks call these instead of importing the tasks, so the tasks import the
services and nothing imports back. The task objects are imported when a message is sent, not
when this module loads: analysis.tasks imports the services, which import this module.
"""

from core.queueing import send_quietly


def enqueue_run(experiment_id: int, run_id: int) -> None:
    """Send ``analysis.run`` for a recorded run (raises when the broker is unavailable)."""
    from analysis.tasks import run_analysis

    run_analysis.delay(experiment_id, run_id)


def enqueue_webhook(delivery_id: int) -> None:
    """Send ``analysis.deliver_webhook`` for a stored delivery. Runs after the caller's
    transaction commits, so it must not raise into it (the rollback or analysis that sent it is
    done): a broker outage leaves the delivery pending, logged, and the beat's
    ``analysis.resend_webhooks`` queues it again (`analysis.webhooks.webhook_deliveries_resend`)."""
    from analysis.tasks import deliver_webhook

    unsent = f"webhook delivery {delivery_id} not queued; it stays pending"
    send_quietly(deliver_webhook, delivery_id, unsent=unsent)


def enqueue_holdout_run(holdout_id: int) -> None:
    """Send ``analysis.holdout_run``: the holdout's comparison now."""
    from analysis.tasks import run_holdout

    run_holdout.delay(holdout_id)
