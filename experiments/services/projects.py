"""Projects, members, API keys, user tokens, project settings and the webhook secret."""

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from core.egress import url_refusal
from core.errors import DomainError
from experiments.models import (
    DEFAULT_ENVIRONMENTS,
    PRODUCTION,
    ApiKey,
    ApiKeyScope,
    Environment,
    Membership,
    Project,
    Role,
    new_webhook_secret,
)
from experiments.services.audit import _user, audit_log_record

SLUG_NOT_AVAILABLE = "The slug '{slug}' is not available; choose another."
PROJECT_CREATION_REFUSED = (
    "Only staff may create projects here (ABACUS_PROJECT_CREATION=staff): ask a staff member to "
    "create it and make you its admin."
)


def environments_create_defaults(project: Project) -> None:
    """production (with the project's client key), staging and development."""
    for position, (key, name) in enumerate(DEFAULT_ENVIRONMENTS):
        Environment.objects.get_or_create(
            project=project,
            key=key,
            defaults={
                "name": name,
                "production": key == PRODUCTION,
                "position": position,
                **({"client_key": project.client_key} if key == PRODUCTION else {}),
            },
        )


def project_creation_allowed(user: AbstractBaseUser | None) -> bool:
    """ABACUS_PROJECT_CREATION: "staff" (the default) lets only staff and superusers create
    projects; "anyone" lets every signed-in person. The creator becomes the project's admin."""
    if user is None or not user.is_authenticated:
        return False
    if settings.ABACUS_PROJECT_CREATION == "anyone":
        return True
    return bool(user.is_staff or user.is_superuser)


@transaction.atomic
def project_create(
    *,
    slug: str,
    name: str,
    owner: AbstractBaseUser | None = None,
    actor: AbstractBaseUser | None = None,
) -> Project:
    """``actor`` is the person asking (checked against ABACUS_PROJECT_CREATION); None is the
    system or the command line. ``owner`` (default: the actor) becomes the admin."""
    if actor is not None and not project_creation_allowed(actor):
        raise PermissionDenied(PROJECT_CREATION_REFUSED)
    owner = owner if owner is not None else actor
    if Project.objects.filter(slug=slug).exists():
        # The same answer whether or not the asker can see the project: a non-member must not
        # learn which slugs exist.
        raise DomainError(SLUG_NOT_AVAILABLE.format(slug=slug), field="slug")
    project = Project(slug=slug, name=name)
    project.full_clean()
    project.save()
    environments_create_defaults(project)
    if owner is not None:
        Membership.objects.create(user=owner, project=project, role=Role.ADMIN)
    audit_log_record(project=project, action="project.create", target=slug, actor=actor or owner)
    return project


def webhook_url_check(url: str) -> None:
    """Refuse a webhook URL that points inside abacus's own network (core.egress)."""
    if url:
        refusal = url_refusal(url)
        if refusal:
            raise DomainError(refusal, "webhook_url")


# Event retention (Project.event_retention_days): at least a week, since the event tables are
# kept in weekly partitions on PostgreSQL and the maintenance drops whole weeks; at most ten years.
MIN_EVENT_RETENTION_DAYS = 7
MAX_EVENT_RETENTION_DAYS = 3650
_UNCHANGED: Any = object()  # project_update's "not given" for settings where None is a value


def event_retention_check(days: Any) -> int | None:
    """The retention in days (None: keep events forever), or a DomainError naming the field."""
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int):
        raise DomainError(
            "'event_retention_days' must be a whole number of days or null.", "event_retention_days"
        )
    if not MIN_EVENT_RETENTION_DAYS <= days <= MAX_EVENT_RETENTION_DAYS:
        raise DomainError(
            f"'event_retention_days' must be between {MIN_EVENT_RETENTION_DAYS} and "
            f"{MAX_EVENT_RETENTION_DAYS} days (or null to keep events forever): events are "
            "dropped a whole week at a time.",
            "event_retention_days",
        )
    return days


def _project_settings(project: Project) -> dict[str, Any]:
    """The settings project_update changes, as the audit log records them."""
    return {
        "name": project.name,
        "webhook_url": project.webhook_url,
        "require_approval": project.require_approval,
        "event_retention_days": project.event_retention_days,
    }


@transaction.atomic
def project_update(
    *,
    project: Project,
    actor: AbstractBaseUser | None = None,
    name: str | None = None,
    webhook_url: str | None = None,
    require_approval: bool | None = None,
    event_retention_days: int | None = _UNCHANGED,
) -> Project:
    """``require_approval``: production flag changes need a second admin's approval.
    ``event_retention_days``: events older than this are dropped by the hourly maintenance and
    refused at ingestion (None: kept forever; not given: unchanged)."""
    before = _project_settings(project)
    if name is not None:
        project.name = name
    if require_approval is not None:
        project.require_approval = bool(require_approval)
    if webhook_url is not None:
        webhook_url_check(webhook_url.strip())
        project.webhook_url = webhook_url.strip()
    if event_retention_days is not _UNCHANGED:
        project.event_retention_days = event_retention_check(event_retention_days)
    project.full_clean()
    project.save()
    audit_log_record(
        project=project,
        action="project.update",
        target=project.slug,
        actor=actor,
        before=before,
        after=_project_settings(project),
    )
    return project


def _secret_fingerprint(secret: str) -> str:
    """Identifies a signing secret in the audit log without revealing it."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


@transaction.atomic
def project_webhook_secret_reveal(*, project: Project, actor: AbstractBaseUser | None) -> str:
    """The webhook signing secret, for a project admin; every reveal is audited."""
    audit_log_record(
        project=project,
        action="project.webhook_secret.reveal",
        target=project.slug,
        actor=actor,
        after={"secret": _secret_fingerprint(project.webhook_secret)},
    )
    return project.webhook_secret


@transaction.atomic
def project_webhook_secret_rotate(*, project: Project, actor: AbstractBaseUser | None) -> str:
    """A new signing secret: deliveries sent from now on are signed with it (retries of earlier
    messages too). Audited with fingerprints, never the secrets."""
    locked = Project.objects.select_for_update().get(pk=project.pk)
    before = _secret_fingerprint(locked.webhook_secret)
    locked.webhook_secret = new_webhook_secret()
    locked.save(update_fields=["webhook_secret"])
    project.webhook_secret = locked.webhook_secret
    audit_log_record(
        project=project,
        action="project.webhook_secret.rotate",
        target=project.slug,
        actor=actor,
        before={"secret": before},
        after={"secret": _secret_fingerprint(locked.webhook_secret)},
    )
    return locked.webhook_secret


def _check_keeps_an_admin(project: Project, user: AbstractBaseUser) -> None:
    others = Membership.objects.filter(project=project, role=Role.ADMIN).exclude(user=user)
    is_admin = Membership.objects.filter(project=project, user=user, role=Role.ADMIN).exists()
    if is_admin and not others.exists():
        raise DomainError(
            f"{user.get_username()} is the project's only admin: make someone else admin first.",
            "role",
        )


@transaction.atomic
def membership_set(
    *, project: Project, user: AbstractBaseUser, role: str, actor: AbstractBaseUser | None = None
) -> Membership:
    if role not in Role.values:
        raise DomainError(f"Unknown role '{role}'; use one of {', '.join(Role.values)}.", "role")
    previous = Membership.objects.filter(user=user, project=project).first()
    if role != Role.ADMIN:
        _check_keeps_an_admin(project, user)
    membership, _ = Membership.objects.update_or_create(
        user=user, project=project, defaults={"role": role}
    )
    audit_log_record(
        project=project,
        action="member.set",
        target=user.get_username(),
        actor=actor,
        before={"role": previous.role} if previous else None,
        after={"role": role},
    )
    return membership


NO_ADDABLE_USER = (
    "There is no user '{username}' you can add. Give a password to create their account, or "
    "ask a superuser to add someone who shares none of your projects."
)
USERNAME_NOT_AVAILABLE = "The username '{username}' is not available; choose another."


def _addable_user(actor: AbstractBaseUser | None, username: str) -> AbstractBaseUser | None:
    """The active user called `username` whom the actor may add to a project.

    A superuser (or the command line: no actor) may add anyone; a project admin only people who
    already share a project with them, so the answer for anyone else is the answer for a
    username that does not exist (membership_add).
    """
    users = get_user_model().objects.filter(username=username, is_active=True)
    if actor is not None and not actor.is_superuser:
        users = users.filter(memberships__project__memberships__user=actor).distinct()
    return users.first()


@transaction.atomic
def membership_add(
    *,
    project: Project,
    username: str,
    role: str,
    password: str = "",
    email: str = "",
    actor: AbstractBaseUser | None = None,
) -> Membership:
    """Add a person to the project; creates their login when a password is given.

    Enumeration: an unknown username and one the actor may not add (see _addable_user) get the
    same answer. Creating an account necessarily says whether a username is free (usernames
    are unique), as any sign-up does; the creation is audited (`user.create`).
    """
    user_model = get_user_model()
    user = _addable_user(actor, username)
    if user is None:
        if not password:
            raise DomainError(NO_ADDABLE_USER.format(username=username), "username")
        if user_model.objects.filter(username=username).exists():
            raise DomainError(USERNAME_NOT_AVAILABLE.format(username=username), "username")
        user = user_model(username=username, email=email)
        try:
            user_model.username_validator(username)
        except ValidationError as exc:
            raise DomainError(" ".join(exc.messages), "username") from exc
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise DomainError(" ".join(exc.messages), "password") from exc
        user.set_password(password)
        user.save()
        audit_log_record(project=project, action="user.create", target=username, actor=actor)
    return membership_set(project=project, user=user, role=role, actor=actor)


@transaction.atomic
def membership_remove(
    *, project: Project, user: AbstractBaseUser, actor: AbstractBaseUser | None = None
) -> None:
    membership = Membership.objects.filter(project=project, user=user).first()
    if membership is None:
        raise DomainError(f"{user.get_username()} is not a member of this project.", "username")
    _check_keeps_an_admin(project, user)
    audit_log_record(
        project=project,
        action="member.remove",
        target=user.get_username(),
        actor=actor,
        before={"role": membership.role},
    )
    membership.delete()


@dataclass(frozen=True)
class CreatedUserToken:
    auth_token: Any  # knox.models.AuthToken: only the digest is stored
    token: str  # shown once

    @property
    def expiry(self) -> Any:
        return self.auth_token.expiry


def user_token_create(*, user: AbstractBaseUser) -> CreatedUserToken:
    """A new API token for a person (`Authorization: Token <key>`), expiring after
    REST_KNOX["TOKEN_TTL"]. Only its digest is stored: return the token to show it once."""
    from knox.models import AuthToken

    auth_token, token = AuthToken.objects.create(user=user)
    return CreatedUserToken(auth_token=auth_token, token=token)


def user_tokens_revoke(*, user: AbstractBaseUser) -> int:
    """Revoke every API token of a person; the next request with one of them gets a 401."""
    from knox.models import AuthToken

    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted


def hash_api_secret(secret: str) -> str:
    # Secrets are 32 random bytes: a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str


@transaction.atomic
def api_key_create(
    *,
    project: Project,
    name: str,
    scopes: Iterable[str],
    actor: AbstractBaseUser | None = None,
    environment: str | None = None,
) -> CreatedApiKey:
    """``environment``: the key of the project environment the key belongs to (production when
    not given)."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiKeyScope.values]
    if unknown or not scopes:
        raise DomainError(
            f"Scopes must be a non-empty subset of {', '.join(ApiKeyScope.values)}.", "scopes"
        )
    name = (name or "").strip()
    if not name:
        raise DomainError("Give the key a name that says which service uses it.", "name")
    env = Environment.objects.filter(project=project, key=environment or PRODUCTION).first()
    if env is None:
        raise DomainError(f"The project has no environment {environment!r}.", "environment")
    prefix = secrets.token_hex(6)
    secret = f"abk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        project=project,
        environment=env,
        name=name,
        prefix=prefix,
        hashed_secret=hash_api_secret(secret),
        scopes=scopes,
        created_by=_user(actor),
    )
    audit_log_record(
        project=project,
        action="api_key.create",
        target=name,
        actor=actor,
        after={"scopes": scopes, "environment": env.key},
    )
    return CreatedApiKey(api_key=api_key, secret=secret)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None = None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_log_record(
            project=api_key.project, action="api_key.revoke", target=api_key.name, actor=actor
        )
    return api_key
