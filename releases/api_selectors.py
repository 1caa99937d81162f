"""Reads of the releases REST API (releases/apis.py): the filtered list, one release with its
metrics and transitions, and a window of its checks. The pages' reads are in
releases/selectors.py; these return the rows the API's serializers render, in a fixed number of
queries whatever the count.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404

from core.errors import DomainError
from experiments.models import Environment, Project
from flags.models import Flag

from .models import Release, ReleaseCheck, ReleaseMetric, ReleaseTransition

MAX_LIST = 500
DEFAULT_LIST = 100
MAX_CHECKS = 500
MAX_ID = 2**63 - 1  # larger ids cannot exist (and overflow the database's bigint)


def _with_details(releases: QuerySet[Release]) -> QuerySet[Release]:
    """The related rows every rendering needs; ``creator_label`` names who created it when no
    person did (a service key: ``key:<name>``), from the first transition."""
    first_actor = (
        ReleaseTransition.objects.filter(release=OuterRef("pk"))
        .order_by("at", "id")
        .values("actor_label")[:1]
    )
    return (
        releases.select_related("project", "flag", "environment", "created_by")
        .prefetch_related(
            Prefetch("metrics", queryset=ReleaseMetric.objects.select_related("metric"))
        )
        .annotate(creator_label=Subquery(first_actor))
    )


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


def api_release_list(
    project: Project,
    *,
    environment: str | None = None,
    status: str | None = None,
    flag: str | None = None,
    limit: int = DEFAULT_LIST,
) -> list[Release]:
    """The project's releases, newest first, at most ``limit``; filters by environment key,
    status and flag key (an unknown key matches nothing)."""
    releases = Release.objects.filter(project=project)
    if environment:
        releases = releases.filter(environment__key=environment)
    if status:
        releases = releases.filter(status=status)
    if flag:
        releases = releases.filter(flag__key=flag)
    return list(_with_details(releases).order_by("-created_at", "-id")[:limit])


def api_release_get(project: Project, release_id: int, *, transitions: bool = True) -> Release:
    """One release of the project (404 for another project's), with its transitions in order."""
    if int(release_id) > MAX_ID:
        raise Http404(f"No release {release_id} in this project.")
    releases = _with_details(Release.objects.filter(project=project, pk=release_id))
    if transitions:
        releases = releases.prefetch_related(
            Prefetch("transitions", queryset=ReleaseTransition.objects.order_by("at", "id"))
        )
    release = releases.first()
    if release is None:
        raise Http404(f"No release {release_id} in this project.")
    return release


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
