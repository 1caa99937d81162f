"""Signed JSON webhooks to the project's URL, e.g. when the worker rolls an experiment back.

A message is stored (WebhookDelivery) in the transaction that decided to send it and handed to
the ``analysis.deliver_webhook`` task once that commits, so the decision never waits for the
receiver. Each attempt POSTs the stored body with ``X-Abacus-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the project's ``webhook_secret``; non-2xx answers and
network errors are retried with exponential backoff, and every attempt is recorded.

Receivers verify with ``hmac.compare_digest(header, webhook_signature(secret, raw_body))`` and
may de-duplicate on the body's ``id`` (a retry resends the same id); docs/operations.md
"Webhooks" has the receiver's code.

Messages go only where ``core.egress`` allows: public addresses, checked after DNS resolution
by the connection itself, or the receivers listed in ``ABACUS_WEBHOOK_ALLOWED_HOSTS``. A refused
send is not retried: the delivery ends failed with a ``Refused: ...`` note.
"""

import json
from datetime import datetime
from typing import Any

import requests
from django.db import transaction
from django.utils import timezone

from analysis.dispatch import enqueue_webhook
from analysis.models import DeliveryStatus, ResultSnapshot, WebhookDelivery
from core.deliveries import never_attempted_resend
from core.egress import BlockedDestination, guarded_session
from core.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    webhook_signature,
)
from experiments.models import Experiment, Project

TIMEOUT_SECONDS = 10
MAX_ERROR_CHARS = 2000


class WebhookError(Exception):
    """A delivery attempt failed (network error or non-2xx answer); the task retries."""


def webhook_enqueue(
    *,
    project: Project,
    event: str,
    payload: dict[str, Any],
    experiment: Experiment | None = None,
    snapshot: ResultSnapshot | None = None,
) -> WebhookDelivery | None:
    """Store the message and send it after the current transaction commits.

    None when the project has no webhook URL.
    """
    if not project.webhook_url:
        return None
    delivery = WebhookDelivery.objects.create(
        project=project,
        experiment=experiment,
        snapshot=snapshot,
        event=event,
        url=project.webhook_url,
        body="",
    )
    message = {"id": delivery.pk, "event": event, "project": project.slug, **payload}
    delivery.body = json.dumps(message, sort_keys=True, separators=(",", ":"), default=str)
    delivery.save(update_fields=["body"])
    transaction.on_commit(lambda: enqueue_webhook(delivery.pk))
    return delivery


def webhook_deliver(*, delivery_id: int) -> WebhookDelivery:
    """One delivery attempt, recorded; raises WebhookError when it failed."""
    delivery = WebhookDelivery.objects.select_related("project").get(pk=delivery_id)
    if delivery.status == DeliveryStatus.DELIVERED:
        return delivery  # a redelivered task: already done
    # The attempt is claimed before sending: of two tasks for one delivery (one queued again by
    # `webhook_deliveries_resend` while the first was only late), one sends.
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, attempts=delivery.attempts)
        .exclude(status=DeliveryStatus.DELIVERED)
        .update(attempts=delivery.attempts + 1)
    )
    if not claimed:
        delivery.refresh_from_db()
        return delivery
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "abacus-webhooks/1",
        SIGNATURE_HEADER: webhook_signature(delivery.project.webhook_secret, body),
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
    }
    delivery.attempts += 1
    delivery.last_attempt_at = timezone.now()
    error, refused = _post(delivery, body, headers)
    delivery.last_error = error[:MAX_ERROR_CHARS]
    if not error:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = delivery.last_attempt_at
    if refused:
        delivery.status = DeliveryStatus.FAILED  # policy, not a transient error: no retry
    delivery.save(
        update_fields=[
            "attempts",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "status",
            "delivered_at",
        ]
    )
    if error and not refused:
        raise WebhookError(error)
    return delivery


def _post(delivery: WebhookDelivery, body: bytes, headers: dict[str, str]) -> tuple[str, bool]:
    """POST the body once and record the status code: (the error or "", refused by egress)."""
    error = ""
    refused = False
    try:
        with guarded_session() as session:
            response = session.post(
                delivery.url,
                data=body,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        delivery.last_status_code = response.status_code
        if not 200 <= response.status_code < 300:
            error = f"HTTP {response.status_code}: {response.text[:200]}"
    except BlockedDestination as exc:
        delivery.last_status_code = None
        error, refused = f"Refused: {exc}", True
    except requests.RequestException as exc:
        delivery.last_status_code = None
        error = f"{type(exc).__name__}: {exc}"
    return error, refused


def webhook_give_up(*, delivery_id: int) -> None:
    """Retries are exhausted: the delivery stays visible as failed with its last error."""
    WebhookDelivery.objects.filter(pk=delivery_id).exclude(status=DeliveryStatus.DELIVERED).update(
        status=DeliveryStatus.FAILED
    )


# --- deliveries never queued ------------------------------------------------------------------


def webhook_deliveries_resend(*, now: datetime | None = None) -> tuple[int, int]:
    """The beat's sweep (`core.deliveries`): deliveries never attempted queued again after 10
    minutes, failed after a day. Returns (queued again, given up)."""
    never = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, attempts=0)
    return never_attempted_resend(never, enqueue_webhook, DeliveryStatus.FAILED, now=now)
