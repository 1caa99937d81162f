"""Reads on the project holdout: the running one as the serving paths need it, the project's
holdouts for pages and the API."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, QuerySet
from django.http import Http404

from bucketing.holdout import HoldoutSpec
from experiments.models import Holdout, Project

# The serving paths' version queries add these (one index probe each): a holdout started,
# ended or edited changes what is served.
HOLDOUT_VERSION_SQL = (
    "(SELECT MAX(updated_at) FROM experiments_holdout WHERE project_id = {p}), "
    "(SELECT COUNT(*) FROM experiments_holdout WHERE project_id = {p} AND enabled)"
)


@dataclass(frozen=True)
class ServedHoldout:
    """The running holdout as the serving paths use it: its id (the exposures' key), the pure
    spec (seed and share) and when it started (exposures before then are not its)."""

    id: int
    spec: HoldoutSpec
    started_at: datetime


def holdout_version_sql(project_param: str) -> str:
    """The holdout's part of a version query, for the project bound as ``project_param``."""
    return HOLDOUT_VERSION_SQL.format(p=project_param)


def served_holdout(project_id: int) -> ServedHoldout | None:
    """The project's running holdout, or None."""
    holdout = Holdout.objects.filter(project_id=project_id, enabled=True).first()
    if holdout is None or holdout.started_at is None:
        return None
    return ServedHoldout(holdout.pk, HoldoutSpec(holdout.seed, holdout.share), holdout.started_at)


def holdout_changed_at(project_id: int) -> datetime | None:
    """When any holdout of the project last changed: a payload's ``dateUpdated`` must move when
    a holdout starts or ends, as its rules' filters do."""
    return Holdout.objects.filter(project_id=project_id).aggregate(at=Max("updated_at"))["at"]


def holdouts_for_project(project: Project) -> QuerySet[Holdout]:
    """Every holdout of the project, newest first."""
    return Holdout.objects.filter(project=project).select_related("project")


def holdout_get(project: Project, holdout_id: int) -> Holdout:
    """The project's holdout, or 404 (another project's holdout is not found either)."""
    holdout = holdouts_for_project(project).filter(pk=holdout_id).first()
    if holdout is None:
        raise Http404("No such holdout in this project.")
    return holdout


def holdout_current(project: Project) -> Holdout | None:
    """The holdout a project's holdout page shows first: the running one, else the latest."""
    holdouts = holdouts_for_project(project)
    return holdouts.filter(enabled=True).first() or holdouts.first()
