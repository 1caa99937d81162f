"""Notification reads: a project's channels, one person's preferences, recent deliveries."""

from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from experiments.models import Project
from notifications.models import (
    ChannelKind,
    NotificationChannel,
    NotificationDelivery,
    NotificationPreference,
)


def channels_for_project(project: Project) -> QuerySet[NotificationChannel]:
    return NotificationChannel.objects.filter(project=project).select_related("project")


def channel_get(project: Project, channel_id: int) -> NotificationChannel:
    channel = channels_for_project(project).filter(pk=channel_id).first()
    if channel is None:
        raise Http404("No such notification channel in this project.")
    return channel


def channel_target_shown(channel: NotificationChannel, *, full: bool) -> str:
    """What a reader sees of the target. A Slack incoming-webhook URL is a credential (anyone
    holding it may post to the channel): only admins (``full``) see it whole, the others see
    its scheme and host."""
    if full or channel.kind != ChannelKind.SLACK:
        return channel.target
    parts = urlsplit(channel.target)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def preference_for(user: AbstractBaseUser, project: Project) -> NotificationPreference | None:
    """None when the person never saved one: they receive no email about the project."""
    return NotificationPreference.objects.filter(user=user, project=project).first()


def deliveries_for_project(project: Project, limit: int = 20) -> list[NotificationDelivery]:
    return list(
        NotificationDelivery.objects.filter(project=project)
        .select_related("channel", "user")
        .order_by("-created_at", "-id")[:limit]
    )
