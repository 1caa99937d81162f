"""A flag in one environment (on/off, default, rules), the production rule and change
requests, and new environments.

Production changes need an admin; when the project requires approval they become a change
request that another admin approves, except the kill switch (an admin turning a flag off in
production), which applies at once. Outside production, editors change anything.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.models import Environment, Project
from experiments.services import audit_log_record
from experiments.services.audit import _user
from flags.models import ChangeRequest, ChangeRequestStatus, Flag, FlagEnvironment
from flags.services.access import is_admin, require
from flags.services.flags import flag_touch
from flags.services.rules import check_key, check_name, check_rules, check_variation_key

CHANGE_FIELDS = ("enabled", "default_variation", "rules")
KILL_SWITCH = {"enabled": False}


def config_snapshot(config: FlagEnvironment) -> dict[str, Any]:
    return {
        "environment": config.environment.key,
        "enabled": config.enabled,
        "default_variation": config.default_variation,
        "rules": config.rules,
    }


def check_change(flag: Flag, environment: Environment, change: dict[str, Any]) -> dict[str, Any]:
    """The change validated and normalised (rule ids filled in)."""
    keys = [v["key"] for v in flag.variations]
    out: dict[str, Any] = {}
    if change.get("enabled") is not None:
        if not isinstance(change["enabled"], bool):
            raise DomainError("'enabled' is true or false.", "enabled")
        out["enabled"] = change["enabled"]
    if change.get("default_variation") is not None:
        out["default_variation"] = check_variation_key(
            keys, change["default_variation"], "default_variation", "The default variation"
        )
    if change.get("rules") is not None:
        out["rules"] = check_rules(keys, environment, change["rules"])
    return out


def config_get(flag: Flag, environment: Environment) -> FlagEnvironment:
    if flag.project_id != environment.project_id:
        raise DomainError("The environment belongs to another project.", "environment")
    config, _ = FlagEnvironment.objects.get_or_create(
        flag=flag, environment=environment, defaults={"default_variation": flag.off_variation}
    )
    return config


def apply_change(
    flag: Flag,
    environment: Environment,
    change: dict[str, Any],
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
) -> FlagEnvironment:
    """Validate (again: the flag may have changed since) and write one change, audited."""
    change = check_change(flag, environment, change)
    config = FlagEnvironment.objects.select_for_update().get(pk=config_get(flag, environment).pk)
    config.environment = environment
    before = config_snapshot(config)
    for name, value in change.items():
        setattr(config, name, value)
    config.save()  # bumps updated_at: serving's version changes
    flag_touch(flag)
    audit_log_record(
        project=flag.project,
        action="flag.update",
        target=f"flag:{flag.key}",
        actor=actor,
        actor_label=actor_label,
        before=before,
        after=config_snapshot(config),
    )
    return config


def _needs_request(project: Project, environment: Environment, actor: Any, change: dict) -> bool:
    """Whether this change goes through a change request; raises when the actor may not ask."""
    if not environment.production or actor is None:
        return False
    admin = is_admin(project, actor)
    if change == KILL_SWITCH and admin:
        return False  # the kill switch: an admin turns a flag off at once, always
    if project.require_approval:
        return True
    if not admin:
        raise PermissionDenied(f"Changes to {environment.key} need an admin of '{project.slug}'.")
    return False


def _request_create(
    flag: Flag, environment: Environment, change: dict, actor: Any, comment: str
) -> ChangeRequest:
    request = ChangeRequest.objects.create(
        project=flag.project,
        flag=flag,
        environment=environment,
        change=change,
        comment=comment or "",
        requested_by=_user(actor),
    )
    audit_log_record(
        project=flag.project,
        action="flag.change_request",
        target=f"flag:{flag.key}",
        actor=actor,
        after={"id": request.pk, "environment": environment.key, "change": change},
    )
    return request


@transaction.atomic
def flag_environment_update(
    *,
    flag: Flag,
    environment: Environment,
    actor: AbstractBaseUser | None = None,
    enabled: bool | None = None,
    default_variation: str | None = None,
    rules: list[dict[str, Any]] | None = None,
    comment: str = "",
) -> FlagEnvironment | ChangeRequest:
    """Change the flag in one environment; in production a ChangeRequest (pending) when the
    project requires approval (except an admin's kill switch)."""
    project = flag.project
    require(project, actor, "edit")
    if environment.project_id != flag.project_id:
        raise DomainError("The environment belongs to another project.", "environment")
    given = {"enabled": enabled, "default_variation": default_variation, "rules": rules}
    change = check_change(flag, environment, {k: v for k, v in given.items() if v is not None})
    if not change:
        return config_get(flag, environment)
    if _needs_request(project, environment, actor, change):
        return _request_create(flag, environment, change, actor, comment)
    return apply_change(flag, environment, change, actor)


def flag_toggle(
    *,
    flag: Flag,
    environment: Environment,
    actor: AbstractBaseUser | None = None,
    enabled: bool,
    comment: str = "",
) -> FlagEnvironment | ChangeRequest:
    """On or off in one environment; off in production is the kill switch."""
    if not isinstance(enabled, bool):
        raise DomainError("'enabled' is true or false.", "enabled")
    return flag_environment_update(
        flag=flag, environment=environment, actor=actor, enabled=enabled, comment=comment
    )


@transaction.atomic
def change_request_create(
    *,
    flag: Flag,
    environment: Environment,
    change: dict[str, Any],
    actor: AbstractBaseUser | None = None,
    comment: str = "",
) -> ChangeRequest:
    """Ask for a production change explicitly (even where approval is not required)."""
    require(flag.project, actor, "edit")
    if not environment.production or environment.project_id != flag.project_id:
        raise DomainError(
            "Change requests are for production environments; change others directly.",
            "environment",
        )
    if not isinstance(change, dict) or not set(change) & set(CHANGE_FIELDS):
        raise DomainError(
            'The change sets "enabled", "default_variation" and/or "rules".', "change"
        )
    unknown = sorted(set(change) - set(CHANGE_FIELDS))
    if unknown:
        raise DomainError(f"A change has no field '{unknown[0]}'.", f"change.{unknown[0]}")
    return _request_create(
        flag, environment, check_change(flag, environment, change), actor, comment
    )


def _pending(change_request: ChangeRequest) -> ChangeRequest:
    locked = (
        ChangeRequest.objects.select_for_update()
        .select_related("project", "flag", "environment")
        .get(pk=change_request.pk)
    )
    if locked.status != ChangeRequestStatus.PENDING:
        raise DomainError(f"This change request is already {locked.status}.", "status")
    return locked


@transaction.atomic
def change_request_review(
    *,
    change_request: ChangeRequest,
    actor: AbstractBaseUser | None,
    approve: bool,
    comment: str = "",
) -> ChangeRequest:
    """An admin other than the requester approves (the change is validated and applied, or
    the request is marked failed with the reason) or rejects."""
    request = _pending(change_request)
    project = request.project
    if actor is not None:
        if not is_admin(project, actor):
            raise PermissionDenied("Only an admin of the project may review change requests.")
        if request.requested_by_id is not None and request.requested_by_id == actor.pk:
            raise PermissionDenied("Another admin must review your own change request.")
    request.reviewed_by = _user(actor)
    request.reviewed_at = timezone.now()
    request.review_comment = comment or ""
    if not approve:
        request.status = ChangeRequestStatus.REJECTED
    else:
        try:
            with transaction.atomic():
                apply_change(request.flag, request.environment, request.change, actor)
            request.status = ChangeRequestStatus.APPLIED
        except DomainError as exc:
            request.status = ChangeRequestStatus.FAILED
            request.review_comment = (f"{comment}\n" if comment else "") + (
                f"Could not apply: {exc.message}"
            )
    request.save()
    audit_log_record(
        project=project,
        action=f"flag.change_request.{request.status}",
        target=f"flag:{request.flag.key}",
        actor=actor,
        after={"id": request.pk, "status": request.status, "comment": request.review_comment},
    )
    return request


@transaction.atomic
def change_request_cancel(
    *, change_request: ChangeRequest, actor: AbstractBaseUser | None = None
) -> ChangeRequest:
    """The requester (or an admin) withdraws a pending request."""
    request = _pending(change_request)
    mine = actor is not None and request.requested_by_id == actor.pk
    if actor is not None and not mine and not is_admin(request.project, actor):
        raise PermissionDenied("Only the requester or an admin may cancel a change request.")
    request.status = ChangeRequestStatus.CANCELLED
    request.save(update_fields=["status"])
    audit_log_record(
        project=request.project,
        action="flag.change_request.cancelled",
        target=f"flag:{request.flag.key}",
        actor=actor,
        after={"id": request.pk, "status": request.status},
    )
    return request


@transaction.atomic
def environment_create(
    *, project: Project, key: str, name: str, actor: AbstractBaseUser | None = None
) -> Environment:
    """A new environment (with its own client key); every flag gets a config there, off."""
    require(project, actor, "manage")
    check_key(key)
    name = check_name(name, max_length=100)
    if Environment.objects.filter(project=project, key=key).exists():
        raise DomainError(f"The project already has an environment '{key}'.", "key")
    last = Environment.objects.filter(project=project).order_by("-position").first()
    environment = Environment.objects.create(
        project=project, key=key, name=name, position=(last.position + 1) if last else 0
    )
    FlagEnvironment.objects.bulk_create(
        FlagEnvironment(flag=flag, environment=environment, default_variation=flag.off_variation)
        for flag in Flag.objects.filter(project=project)
    )
    audit_log_record(
        project=project,
        action="environment.create",
        target=f"environment:{key}",
        actor=actor,
        after={"key": key, "name": name},
    )
    return environment
