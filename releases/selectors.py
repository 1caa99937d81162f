"""Reads of guarded releases, for the pages and the REST API (releases/apis.py): the lists, one
release, a flag's releases, the API's window of checks, and the new-release form's flags. The
API's reads return the rows its serializers render, in a fixed number of queries whatever the
count. One release's page (timeline, decision in words, charts) is releases/page.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404

from core.errors import DomainError
from experiments.models import Environment, Project
from flags.models import Flag, FlagEnvironment

from .models import (
    LIVE_STATUSES,
    Release,
    ReleaseCheck,
    ReleaseMetric,
    ReleaseTransition,
)

MAX_LIST = 500  # the API's lists
DEFAULT_LIST = 100
MAX_CHECKS = 500
MAX_ID = 2**63 - 1  # larger ids cannot exist (and overflow the database's bigint)
RELATED = ("project", "flag", "environment", "created_by")


# -- lists --------------------------------------------------------------------------------------


def release_list(
    project: Project,
    *,
    environment: str | None = None,
    status: str | None = None,
    flag: str | None = None,
) -> QuerySet[Release]:
    """The project's releases, newest first; filters by environment key, status (or ``live``:
    scheduled, running or paused) and flag key (an unknown key matches nothing)."""
    releases = Release.objects.filter(project=project).select_related(*RELATED)
    if environment:
        releases = releases.filter(environment__key=environment)
    if status == "live":
        releases = releases.filter(status__in=LIVE_STATUSES)
    elif status:
        releases = releases.filter(status=status)
    if flag:
        releases = releases.filter(flag__key=flag)
    return releases.order_by("-created_at", "-id")


def _with_details(releases: QuerySet[Release]) -> QuerySet[Release]:
    """What the API renders of each release: its metrics, and ``creator_label`` naming who
    created it when no person did (a service key: ``key:<name>``), from the first transition."""
    first_actor = (
        ReleaseTransition.objects.filter(release=OuterRef("pk"))
        .order_by("at", "id")
        .values("actor_label")[:1]
    )
    return (
        releases.select_related(*RELATED)
        .prefetch_related(
            Prefetch("metrics", queryset=ReleaseMetric.objects.select_related("metric"))
        )
        .annotate(creator_label=Subquery(first_actor))
    )


def api_release_list(
    project: Project,
    *,
    environment: str | None = None,
    status: str | None = None,
    flag: str | None = None,
    limit: int = DEFAULT_LIST,
) -> list[Release]:
    """The API's list: ``release_list`` with what the API renders, at most ``limit``."""
    releases = release_list(project, environment=environment, status=status, flag=flag)
    return list(_with_details(releases)[:limit])


def releases_for_flag(flag: Flag, *, limit: int = 10) -> list[Release]:
    return list(
        Release.objects.filter(flag=flag).select_related("environment", "created_by")[:limit]
    )


def _one(releases: QuerySet[Release], project: Project, release_id: int) -> Release:
    """The project's release ``release_id`` among ``releases``: a 404 for another project's or
    none (an id beyond the database's bigint is none, not a database error)."""
    release = None
    if int(release_id) <= MAX_ID:
        release = releases.filter(project=project, pk=release_id).first()
    if release is None:
        raise Http404(f"No release {release_id} in this project.")
    return release


def release_get(project: Project, release_id: int) -> Release:
    """One release of the project, with its flag, environment and creator."""
    return _one(Release.objects.select_related(*RELATED), project, release_id)


def api_release_get(project: Project, release_id: int) -> Release:
    """One release of the project as the API renders it: with its transitions in order."""
    releases = _with_details(Release.objects.all()).prefetch_related(
        Prefetch("transitions", queryset=ReleaseTransition.objects.order_by("at", "id"))
    )
    return _one(releases, project, release_id)


def release_metrics(release: Release) -> list[ReleaseMetric]:
    return list(ReleaseMetric.objects.filter(release=release).select_related("metric"))


# -- words --------------------------------------------------------------------------------------


def step_percent(release: Release, index: int | None = None) -> float | None:
    steps = release.steps or []
    i = release.step if index is None else index
    return float(steps[i]["percent"]) if 0 <= i < len(steps) else None


def api_release_checks(
    release: Release,
    *,
    since: datetime | None = None,
    before: datetime | None = None,
    limit: int = MAX_CHECKS,
) -> list[ReleaseCheck]:
    """The release's checks with data through ``since`` or later (and before ``before``),
    oldest first: the latest ``limit`` of them when there are more."""
    checks = ReleaseCheck.objects.filter(release=release)
    if since is not None:
        checks = checks.filter(at__gte=since)
    if before is not None:
        checks = checks.filter(at__lt=before)
    latest = list(checks.order_by("-at", "-id")[:limit])
    latest.reverse()
    return latest


def flag_for_release(project: Project, key: str) -> Flag:
    """The project's flag ``key``; a body naming no such flag is a 400 on ``flag`` (not a 404:
    the URL was right)."""
    flag = Flag.objects.filter(project=project, key=key).first()
    if flag is None:
        raise DomainError(f"No flag '{key}' in this project.", "flag")
    return flag


def environment_for_release(project: Project, key: str) -> Environment:
    environment = Environment.objects.filter(project=project, key=key).first()
    if environment is None:
        keys = ", ".join(Environment.objects.filter(project=project).values_list("key", flat=True))
        raise DomainError(f"No environment '{key}' in this project ({keys}).", "environment")
    return environment


# -- the new-release form -----------------------------------------------------------------------


def flags_for_release_form(project: Project) -> dict[str, dict[str, Any]]:
    """Per unarchived flag: its name, variation keys, and per environment its default
    variation and whether it is on (the form's baseline default and its hints; two queries)."""
    flags = {
        f.key: {
            "name": f.name,
            "variations": [v["key"] for v in f.variations or []],
            "off_variation": f.off_variation,
            "defaults": {},
            "enabled": {},
        }
        for f in Flag.objects.filter(project=project, archived=False).order_by("key")
    }
    configs = FlagEnvironment.objects.filter(
        flag__project=project, flag__archived=False
    ).values_list("flag__key", "environment__key", "default_variation", "enabled")
    for flag_key, env_key, default, enabled in configs:
        if flag_key in flags:
            flags[flag_key]["defaults"][env_key] = default
            flags[flag_key]["enabled"][env_key] = enabled
    return flags
