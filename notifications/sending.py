"""Sending one stored notification: a Slack-compatible incoming-webhook POST or an email.

Slack messages go only through ``core.egress`` (public addresses, or the receivers listed in
``ABACUS_WEBHOOK_ALLOWED_HOSTS``; the address is checked after the one DNS lookup by the
connection itself). A refused destination is not retried: the delivery ends failed with a
``Refused: ...`` note. Non-2xx answers, network errors and mail-server errors raise
``DeliveryError`` and the task retries them with exponential backoff; every attempt is counted.
Email goes through Django's email backend (``EMAIL_BACKEND``: the console in development, SMTP
when ``EMAIL_HOST`` is set; docs/operations.md "Notifications").
"""

import json
import smtplib
from typing import Any

import requests
from django.core.mail import send_mail
from django.utils import timezone

from core.egress import BlockedDestination, guarded_session
from notifications.models import ChannelKind, DeliveryStatus, Event, NotificationDelivery

TIMEOUT_SECONDS = 10
MAX_ERROR_CHARS = 2000


class DeliveryError(Exception):
    """An attempt failed for a reason that may pass (network, non-2xx, mail server): retry."""


def notification_deliver(*, delivery_id: int) -> NotificationDelivery:
    """One attempt, recorded; raises DeliveryError when it should be retried."""
    delivery = NotificationDelivery.objects.select_related("project").get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return delivery  # a redelivered task: already sent, or given up
    # The attempt is claimed before sending: of two tasks for one delivery (one queued again by
    # `notification_deliveries_resend` while the first was only late), one sends.
    claimed = NotificationDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(attempts=delivery.attempts + 1)
    if not claimed:
        delivery.refresh_from_db()
        return delivery
    delivery.attempts += 1
    if delivery.kind == ChannelKind.SLACK:
        error, final = _post_slack(delivery)
    else:
        error, final = _send_email(delivery)
    delivery.last_error = error[:MAX_ERROR_CHARS]
    if not error:
        delivery.status = DeliveryStatus.SENT
        delivery.sent_at = timezone.now()
    elif final:
        delivery.status = DeliveryStatus.FAILED  # policy or a malformed message: no retry
    delivery.save(update_fields=["attempts", "last_error", "status", "sent_at"])
    if error and not final:
        raise DeliveryError(error)
    return delivery


def notification_give_up(*, delivery_id: int) -> None:
    """Retries are exhausted: the delivery stays visible as failed with its last error."""
    NotificationDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED
    )


# --- Slack --------------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as its docs ask (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(delivery: NotificationDelivery) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` is the notification's plain fallback,
    ``blocks`` a mrkdwn section (title in bold, the text, a link to abacus) and a context line
    naming the project and the event. Compatible receivers (Mattermost, Rocket.Chat, Discord's
    ``/slack`` endpoint) read ``text`` when they ignore blocks."""
    payload = delivery.payload or {}
    link = str(payload.get("link") or "")
    title, text = slack_escape(delivery.title), slack_escape(delivery.text)
    body = f"*{title}*"
    if text:
        body += f"\n{text}"
    if link:
        body += f"\n<{link}|Open in abacus>"
    fallback = delivery.title + (f": {delivery.text}" if delivery.text else "")
    if link:
        fallback += f" {link}"
    event_label = Event(delivery.event).label if delivery.event in Event.values else delivery.event
    context = f"abacus · {slack_escape(str(payload.get('project', '')))} · {event_label}"
    return {
        "text": fallback,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def _post_slack(delivery: NotificationDelivery) -> tuple[str, bool]:
    """POST once: (the error or "", whether the failure is final)."""
    body = json.dumps(slack_message(delivery), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "abacus-notifications/1"}
    try:
        with guarded_session() as session:
            response = session.post(
                delivery.target,
                data=body,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
            )
    except BlockedDestination as exc:
        return f"Refused: {exc}", True
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}", False
    if not 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}: {response.text[:200]}", False
    return "", False


# --- email --------------------------------------------------------------------------------------


def email_message(delivery: NotificationDelivery) -> tuple[str, str]:
    """(subject, plain-text body)."""
    payload = delivery.payload or {}
    project = payload.get("project", delivery.project.slug)
    subject = f"[abacus {project}] {delivery.title}"
    lines = [delivery.title, ""]
    if delivery.text:
        lines += [delivery.text, ""]
    if payload.get("link"):
        lines += [f"Open in abacus: {payload['link']}", ""]
    why = (
        "you asked for these emails in your notification settings of this project"
        if delivery.user_id
        else "this address is a notification channel of this project"
    )
    lines += ["-- ", f"abacus · {project} · {delivery.event}: {why}."]
    return subject, "\n".join(lines)


def _send_email(delivery: NotificationDelivery) -> tuple[str, bool]:
    subject, body = email_message(delivery)
    recipients = [a.strip() for a in delivery.target.split(",") if a.strip()]
    try:
        send_mail(subject, body, None, recipients, fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}", False
    except ValueError as exc:  # e.g. a header Django refuses: retrying changes nothing
        return f"{type(exc).__name__}: {exc}", True
    return "", False
