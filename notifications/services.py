"""Notification writes: ``notify`` (the entry every app calls), channels and preferences.

``notify`` records one ``NotificationDelivery`` per matching channel and per person who asked
for the event by email, in a savepoint of the caller's transaction, and hands each to the
``notifications.deliver`` task once that transaction commits: a release step or a rollback
never waits for Slack or a mail server, and a notification that cannot be recorded is logged,
never raised into the caller.
"""

import logging
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q

from core.deliveries import never_attempted_resend
from core.egress import url_refusal
from core.errors import DomainError
from experiments.models import Project
from experiments.selectors import role_of
from experiments.services import audit_log_record
from notifications.dispatch import enqueue_delivery
from notifications.models import (
    EVENTS,
    ChannelKind,
    DeliveryStatus,
    NotificationChannel,
    NotificationDelivery,
    NotificationPreference,
)

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 300
MAX_TEXT_CHARS = 3000  # a Slack section's text limit
MAX_EMAIL_ADDRESSES = 50
DEFAULT_PUBLIC_URL = "http://localhost:8000"


def notify(
    *,
    project: Project,
    event: str,
    title: str,
    text: str,
    link: str = "",
    data: dict | None = None,
) -> list[int]:
    """Record one notification per matching channel/person and send each after the current
    transaction commits (Celery task), never raising into the caller. Returns the delivery ids.

    ``event`` is one of ``notifications.models.Event``; ``link`` a path in abacus (made
    absolute with ``ABACUS_PUBLIC_URL``) or an absolute URL; ``data`` extra JSON kept with the
    delivery (not sent to Slack or email)."""
    try:
        if event not in EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's work intact
            deliveries = _record(
                project=project,
                event=event,
                title=title,
                text=text,
                link=absolute_link(link),
                data=data or {},
            )
    except Exception:
        logger.exception(
            "notification %s for project %s not recorded", event, getattr(project, "slug", "?")
        )
        return []
    ids = [delivery.pk for delivery in deliveries]
    for delivery_id in ids:
        transaction.on_commit(partial(enqueue_delivery, delivery_id), robust=True)
    return ids


def absolute_link(link: str) -> str:
    """A path made absolute with ``ABACUS_PUBLIC_URL``; absolute URLs and "" unchanged."""
    if not link or urlsplit(link).scheme in ("http", "https"):
        return link
    base = str(getattr(settings, "ABACUS_PUBLIC_URL", "") or DEFAULT_PUBLIC_URL).rstrip("/")
    return f"{base}/{link.lstrip('/')}"


def _record(
    *, project: Project, event: str, title: str, text: str, link: str, data: dict[str, Any]
) -> list[NotificationDelivery]:
    title = " ".join(str(title).split())[:MAX_TITLE_CHARS]  # one line: it is a mail subject
    text = str(text)[:MAX_TEXT_CHARS]
    payload = {"project": project.slug, "link": link, "data": data}
    deliveries: list[NotificationDelivery] = []
    mailed: set[str] = set()
    for channel in NotificationChannel.objects.filter(project=project, enabled=True):
        if channel.events and event not in channel.events:
            continue
        if channel.kind == ChannelKind.EMAIL:
            mailed.update(a.lower() for a in email_addresses(channel.target))
        deliveries.append(
            NotificationDelivery(
                project=project,
                channel=channel,
                event=event,
                kind=channel.kind,
                target=channel.target,
                title=title,
                text=text,
                payload=payload,
            )
        )
    for preference in preferences_for(project):
        address = preference.user.email.strip()
        if event not in preference.events or address.lower() in mailed:
            continue  # not asked for, or already on an email channel that gets this event
        mailed.add(address.lower())
        deliveries.append(
            NotificationDelivery(
                project=project,
                user=preference.user,
                event=event,
                kind=ChannelKind.EMAIL,
                target=address,
                title=title,
                text=text,
                payload=payload,
            )
        )
    for delivery in deliveries:
        delivery.save()
    return deliveries


def preferences_for(project: Project) -> Iterable[NotificationPreference]:
    """Email preferences of the people who may read the project (members, or superusers, as
    ``experiments.selectors.role_of`` says), active and with an address: a person removed from
    the project keeps their preference row but receives nothing."""
    return (
        NotificationPreference.objects.filter(project=project, email=True, user__is_active=True)
        .filter(Q(user__memberships__project=project) | Q(user__is_superuser=True))
        .exclude(user__email="")
        .select_related("user")
        .distinct()
        .order_by("user_id")
    )


# --- validation (one home: the API and the pages call these through the services) -----------


def events_check(events: Any, field: str = "events") -> list[str]:
    """A list of known event names, de-duplicated in the catalogue's order."""
    if events is None:
        return []
    if not isinstance(events, (list, tuple)) or not all(isinstance(e, str) for e in events):
        raise DomainError("Give a list of event names.", field)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise DomainError(
            f"Unknown event(s): {', '.join(unknown)}. Known events: {', '.join(EVENTS)}.", field
        )
    return [e for e in EVENTS if e in set(events)]


def email_addresses(target: str) -> list[str]:
    return [a.strip() for a in str(target).split(",") if a.strip()]


def channel_target_check(kind: str, target: str) -> str:
    """The target, normalised: a Slack-compatible incoming-webhook URL that ``core.egress``
    allows, or comma-separated valid email addresses."""
    target = str(target or "").strip()
    if not target:
        raise DomainError("Give a webhook URL or email addresses.", "target")
    if kind == ChannelKind.SLACK:
        if len(target) > 1000:
            raise DomainError("The URL is longer than 1000 characters.", "target")
        refusal = url_refusal(target)
        if refusal:
            raise DomainError(refusal, "target")
        return target
    addresses = email_addresses(target)
    if not addresses:
        raise DomainError("Give at least one email address.", "target")
    if len(addresses) > MAX_EMAIL_ADDRESSES:
        raise DomainError(f"At most {MAX_EMAIL_ADDRESSES} addresses per channel.", "target")
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise DomainError(f"{address!r} is not a valid email address.", "target") from None
    joined = ", ".join(addresses)
    if len(joined) > 1000:
        raise DomainError("The addresses are longer than 1000 characters.", "target")
    return joined


def _channel_state(channel: NotificationChannel) -> dict[str, Any]:
    return {
        "kind": channel.kind,
        "name": channel.name,
        "target": channel.target,
        "events": channel.events,
        "enabled": channel.enabled,
    }


def _name_check(name: Any) -> str:
    name = str(name or "").strip()
    if not name:
        raise DomainError("Give the channel a name.", "name")
    if len(name) > 100:
        raise DomainError("The name is longer than 100 characters.", "name")
    return name


# --- channels (project admins) ----------------------------------------------------------------


@transaction.atomic
def notification_channel_create(
    *,
    project: Project,
    kind: str,
    name: str,
    target: str,
    events: list[str] | None = None,
    enabled: bool = True,
    actor: AbstractBaseUser | None = None,
) -> NotificationChannel:
    if kind not in ChannelKind.values:
        raise DomainError(f"Kind must be one of: {', '.join(ChannelKind.values)}.", "kind")
    channel = NotificationChannel(
        project=project,
        kind=kind,
        name=_name_check(name),
        target=channel_target_check(kind, target),
        events=events_check(events),
        enabled=bool(enabled),
    )
    channel.full_clean()
    channel.save()
    audit_log_record(
        project=project,
        action="notification_channel.create",
        target=channel.name,
        actor=actor,
        after=_channel_state(channel),
    )
    return channel


@transaction.atomic
def notification_channel_update(
    *,
    channel: NotificationChannel,
    name: str | None = None,
    target: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    actor: AbstractBaseUser | None = None,
) -> NotificationChannel:
    """The kind is fixed at creation (a Slack URL is no email address)."""
    before = _channel_state(channel)
    if name is not None:
        channel.name = _name_check(name)
    if target is not None:
        channel.target = channel_target_check(channel.kind, target)
    if events is not None:
        channel.events = events_check(events)
    if enabled is not None:
        channel.enabled = bool(enabled)
    channel.full_clean()
    channel.save()
    audit_log_record(
        project=channel.project,
        action="notification_channel.update",
        target=channel.name,
        actor=actor,
        before=before,
        after=_channel_state(channel),
    )
    return channel


@transaction.atomic
def notification_channel_delete(
    *, channel: NotificationChannel, actor: AbstractBaseUser | None = None
) -> None:
    """Past deliveries stay (their channel becomes empty) so the record of what was sent
    survives."""
    audit_log_record(
        project=channel.project,
        action="notification_channel.delete",
        target=channel.name,
        actor=actor,
        before=_channel_state(channel),
    )
    channel.delete()


# --- preferences (each person, for themselves) ------------------------------------------------


@transaction.atomic
def notification_preference_set(
    *,
    user: AbstractBaseUser,
    project: Project,
    events: list[str] | None = None,
    email: bool | None = None,
) -> NotificationPreference:
    """Which events this person receives by email about this project. Only people who may read
    the project have preferences; ``events`` omitted on the first save means every event."""
    if role_of(user, project) is None:
        raise DomainError("Only members of the project receive its notifications.", "project")
    preference = NotificationPreference.objects.filter(user=user, project=project).first()
    if preference is None:
        preference = NotificationPreference(
            user=user, project=project, events=list(EVENTS) if events is None else []
        )
    if events is not None:
        preference.events = events_check(events)
    if email is not None:
        preference.email = bool(email)
    preference.full_clean()
    preference.save()
    return preference


# --- deliveries never queued ------------------------------------------------------------------


def notification_deliveries_resend(*, now: datetime | None = None) -> tuple[int, int]:
    """The beat's sweep (`core.deliveries`): deliveries never attempted queued again after 10
    minutes, failed after a day. Returns (queued again, given up)."""
    never = NotificationDelivery.objects.filter(status=DeliveryStatus.PENDING, attempts=0)
    return never_attempted_resend(never, enqueue_delivery, DeliveryStatus.FAILED, now=now)
