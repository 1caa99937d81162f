"""The audit log: who changed what in a project, written by every service."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from experiments.models import AuditLog, Experiment, Project


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else "system"


def _user(actor: AbstractBaseUser | None) -> AbstractBaseUser | None:
    """The actor as a user row, or None for the automation and service principals."""
    if actor is None or not actor.is_authenticated or not isinstance(actor, get_user_model()):
        return None
    return actor


def audit_log_record(
    *,
    project: Project,
    action: str,
    target: str,
    actor: AbstractBaseUser | None = None,
    experiment: Experiment | None = None,
    before: Any = None,
    after: Any = None,
    actor_label: str | None = None,
) -> AuditLog:
    """``actor_label`` names an actor that is no user (e.g. "cli"); by default the actor's
    username, or "system"."""
    return AuditLog.objects.create(
        project=project,
        experiment=experiment,
        actor=_user(actor),
        actor_label=actor_label or _actor_label(actor),
        action=action,
        target=target,
        before=before,
        after=after,
    )
