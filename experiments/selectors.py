"""Reads on experiment definitions, and who may do what in a project."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from experiments.models import (
    ApiKey,
    Experiment,
    ExperimentMetric,
    Membership,
    Project,
    Role,
)

# What each role may do; superusers may do everything everywhere.
PERMISSIONS: dict[str, set[str]] = {
    Role.ADMIN: {"read", "edit", "export", "manage"},
    Role.EDITOR: {"read", "edit", "export"},
    Role.ANALYST: {"read", "export"},
    Role.VIEWER: {"read"},
}


def role_of(user: AbstractBaseUser | AnonymousUser, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, project=project).only("role").first()
    return membership.role if membership else None


def user_can(user: AbstractBaseUser | AnonymousUser, project: Project, permission: str) -> bool:
    role = role_of(user, project)
    return role is not None and permission in PERMISSIONS[role]


def projects_for_user(user: AbstractBaseUser) -> QuerySet[Project]:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_get_for_user(user: AbstractBaseUser | AnonymousUser, slug: str) -> Project:
    """The project, or 404 when it does not exist or the user is no member (no existence leak)."""
    project = Project.objects.filter(slug=slug).first()
    if project is None or role_of(user, project) is None:
        raise Http404("No such project.")
    return project


def experiments_for_project(project: Project) -> QuerySet[Experiment]:
    return (
        Experiment.objects.filter(project=project)
        .select_related("project", "owner")
        .prefetch_related(
            "variants",
            Prefetch(
                "experiment_metrics",
                queryset=ExperimentMetric.objects.select_related("metric"),
            ),
        )
    )


def experiment_get(project: Project, key: str) -> Experiment:
    experiment = experiments_for_project(project).filter(key=key).first()
    if experiment is None:
        raise Http404(f"No experiment '{key}' in this project.")
    return experiment


def api_key_active_by_prefix(prefix: str) -> ApiKey | None:
    return (
        ApiKey.objects.select_related("project")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
