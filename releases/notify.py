"""What a release tells people: Slack and email through ``notifications`` (per project channel
and per person), and the project's signed webhook (``analysis.webhooks``), for every move."""

from __future__ import annotations

from typing import Any

from analysis.webhooks import webhook_enqueue
from notifications.services import notify

from .models import Release


def release_link(release: Release) -> str:
    return f"/p/{release.project.slug}/releases/{release.pk}/"


def release_payload(release: Release) -> dict[str, Any]:
    percent = release.steps[release.step]["percent"] if release.steps else None
    return {
        "release": release.pk,
        "flag": release.flag.key,
        "environment": release.environment.key,
        "variation": release.variation,
        "baseline_variation": release.baseline_variation,
        "status": release.status,
        "step": release.step,
        "percent": percent,
    }


def release_notify(release: Release, event: str, text: str) -> None:
    """Notify after the current transaction commits (never raises into the release's move)."""
    payload = release_payload(release)
    title = (
        f"Release {release.pk} of {release.flag.key} in {release.environment.key}: "
        f"{event.split('.', 1)[1].replace('_', ' ')}"
    )
    notify(
        project=release.project, event=event, title=title, text=text,
        link=release_link(release), data=payload,
    )  # fmt: skip
    webhook_enqueue(project=release.project, event=event, payload={**payload, "reason": text})
