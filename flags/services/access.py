"""Who may change what: the roles of experiments.selectors, plus the production rule (admins
only, through an approved change request when the project requires approval)."""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied

from experiments.models import Project, Role
from experiments.selectors import role_of, user_can


def require(project: Project, actor: AbstractBaseUser | None, permission: str) -> None:
    """``actor`` None is the system (the schedule, commands): always allowed."""
    if actor is None:
        return
    if not user_can(actor, project, permission):
        raise PermissionDenied(
            f"Your role in '{project.slug}' ({role_of(actor, project)}) may not {permission}."
        )


def is_admin(project: Project, actor: AbstractBaseUser | None) -> bool:
    return actor is None or role_of(actor, project) == Role.ADMIN
