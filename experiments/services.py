"""Writes on experiment definitions. Every state rule lives here and raises DomainError."""

import hashlib
import json
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from assignments.conditions import validate_condition
from assignments.selectors import experiment_spec
from config.api import DomainError
from config.egress import url_refusal
from experiments.models import (
    ApiKey,
    ApiKeyScope,
    AuditLog,
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    Membership,
    Metric,
    MetricRole,
    Project,
    Role,
    Variant,
    new_webhook_secret,
)
from experiments.selectors import ramp_stage_due_at

WEIGHT_TOLERANCE = 1e-6
# Ranges of the numeric settings that are not fractions in [0, 1] (docs/user-guide.md "Ranges
# of the settings"). Beyond them the analysis breaks (timestamp arithmetic overflows) or the
# value is a typo: every service, serializer and form enforces them.
MAX_CONVERSION_WINDOW_HOURS = 8760  # one year, for the window and the pre-exposure window
MAX_PLANNED_SAMPLE_SIZE = 1_000_000_000
MAX_MDE = 10.0  # a relative lift of +1000%
MAX_RAMP_STAGE_HOURS = 8760
# Fields of a live (started) experiment that would spoil its statistics if they changed: the
# bucketing (seed, hash attribute, layer slice) and the pre-registered design (alpha, planned
# sample, MDE, decision policy).
FROZEN_WHEN_LIVE = (
    "seed",
    "hash_attribute",
    "layer",
    "layer_start",
    "layer_end",
    "alpha",
    "planned_sample_size",
    "mde",
    "decision_policy",
)
FINISHED = (ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK)


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


# --- projects, members, API keys ------------------------------------------------------------


SLUG_NOT_AVAILABLE = "The slug '{slug}' is not available; choose another."
PROJECT_CREATION_REFUSED = (
    "Only staff may create projects here (ABACUS_PROJECT_CREATION=staff): ask a staff member to "
    "create it and make you its admin."
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
    if owner is not None:
        Membership.objects.create(user=owner, project=project, role=Role.ADMIN)
    audit_log_record(project=project, action="project.create", target=slug, actor=actor or owner)
    return project


def webhook_url_check(url: str) -> None:
    """Refuse a webhook URL that points inside abacus's own network (config.egress)."""
    if url:
        refusal = url_refusal(url)
        if refusal:
            raise DomainError(refusal, "webhook_url")


@transaction.atomic
def project_update(
    *,
    project: Project,
    actor: AbstractBaseUser | None = None,
    name: str | None = None,
    webhook_url: str | None = None,
) -> Project:
    before = {"name": project.name, "webhook_url": project.webhook_url}
    if name is not None:
        project.name = name
    if webhook_url is not None:
        webhook_url_check(webhook_url.strip())
        project.webhook_url = webhook_url.strip()
    project.full_clean()
    project.save()
    after = {"name": project.name, "webhook_url": project.webhook_url}
    audit_log_record(
        project=project,
        action="project.update",
        target=project.slug,
        actor=actor,
        before=before,
        after=after,
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
) -> CreatedApiKey:
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiKeyScope.values]
    if unknown or not scopes:
        raise DomainError(
            f"Scopes must be a non-empty subset of {', '.join(ApiKeyScope.values)}.", "scopes"
        )
    name = (name or "").strip()
    if not name:
        raise DomainError("Give the key a name that says which service uses it.", "name")
    prefix = secrets.token_hex(6)
    secret = f"abk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        project=project,
        name=name,
        prefix=prefix,
        hashed_secret=hash_api_secret(secret),
        scopes=scopes,
        created_by=_user(actor),
    )
    audit_log_record(
        project=project, action="api_key.create", target=name, actor=actor, after={"scopes": scopes}
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


# --- metrics --------------------------------------------------------------------------------

METRIC_FIELDS = (
    "name",
    "description",
    "kind",
    "event_name",
    "denominator_event",
    "direction",
    "winsorize_quantile",
    "conversion_window_hours",
    "cuped",
)
# What a metric computes: frozen while a live experiment uses it (name and description are not).
METRIC_DEFINITION_FIELDS = (
    "kind",
    "event_name",
    "denominator_event",
    "direction",
    "winsorize_quantile",
    "conversion_window_hours",
    "cuped",
)
LIVE_STATUSES = (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)


def _metric_snapshot(metric: Metric) -> dict[str, Any]:
    return {f: getattr(metric, f) for f in ("key", *METRIC_FIELDS)}


def _metric_check(metric: Metric) -> None:
    if metric.kind == "ratio" and not metric.denominator_event:
        raise DomainError("A ratio metric needs a denominator event.", "denominator_event")
    if metric.kind != "ratio":
        metric.denominator_event = ""
    q = metric.winsorize_quantile
    if q is not None and not 0.5 < q <= 1:
        raise DomainError(
            "The winsorization quantile must be above 0.5 and at most 1 (0.99 caps the top 1%).",
            "winsorize_quantile",
        )
    hours = metric.conversion_window_hours
    if hours is not None and (
        not _is_number(hours)
        or hours != int(hours)
        or not 1 <= hours <= MAX_CONVERSION_WINDOW_HOURS
    ):
        raise DomainError(
            f"The conversion window must be a whole number of hours from 1 to "
            f"{MAX_CONVERSION_WINDOW_HOURS} (one year); 72 counts three days after exposure.",
            "conversion_window_hours",
        )
    metric.full_clean()


@transaction.atomic
def metric_create(
    *, project: Project, key: str, actor: AbstractBaseUser | None = None, **fields: Any
) -> Metric:
    if Metric.objects.filter(project=project, key=key).exists():
        raise DomainError(f"A metric with key '{key}' already exists in this project.", "key")
    metric = Metric(project=project, key=key, **fields)
    _metric_check(metric)
    metric.save()
    audit_log_record(
        project=project,
        action="metric.create",
        target=key,
        actor=actor,
        after=_metric_snapshot(metric),
    )
    return metric


@transaction.atomic
def metric_update(
    *, metric: Metric, actor: AbstractBaseUser | None = None, **fields: Any
) -> Metric:
    if "key" in fields and fields["key"] != metric.key:
        raise DomainError("A metric's key cannot change once created.", "key")
    fields.pop("key", None)
    before = _metric_snapshot(metric)
    changed = [
        name
        for name in METRIC_DEFINITION_FIELDS
        if name in fields and not _same(fields[name], getattr(metric, name))
    ]
    if changed:
        live = sorted(
            metric.experiment_metrics.filter(experiment__status__in=LIVE_STATUSES).values_list(
                "experiment__key", flat=True
            )
        )
        if live:
            raise DomainError(
                f"Metric '{metric.key}' is used by live experiment(s) {', '.join(live)}: "
                f"changing its {', '.join(changed)} would change their results. "
                "Create a new metric instead (its name and description may change).",
                changed[0],
            )
    for name, value in fields.items():
        if name not in METRIC_FIELDS:
            raise DomainError(f"Unknown metric field '{name}'.", name)
        setattr(metric, name, value)
    _metric_check(metric)
    metric.save()
    audit_log_record(
        project=metric.project,
        action="metric.update",
        target=metric.key,
        actor=actor,
        before=before,
        after=_metric_snapshot(metric),
    )
    return metric


@transaction.atomic
def metric_delete(*, metric: Metric, actor: AbstractBaseUser | None = None) -> None:
    in_use = sorted(metric.experiment_metrics.values_list("experiment__key", flat=True))
    if in_use:
        raise DomainError(
            f"Metric '{metric.key}' is used by experiment(s) {', '.join(in_use)}; "
            "remove it from them first.",
            "key",
        )
    audit_log_record(
        project=metric.project,
        action="metric.delete",
        target=metric.key,
        actor=actor,
        before=_metric_snapshot(metric),
    )
    metric.delete()


# --- experiments ----------------------------------------------------------------------------

EXPERIMENT_FIELDS = (
    "name",
    "hypothesis",
    "seed",
    "hash_attribute",
    "coverage",
    "targeting",
    "layer",
    "layer_start",
    "layer_end",
    "alpha",
    "planned_sample_size",
    "mde",
    "decision_policy",
    "auto_rollback",
    "ramp_stages",
    "end_date",
)


def experiment_snapshot(experiment: Experiment) -> dict[str, Any]:
    """A JSON-able picture of the definition, for the audit log."""
    data = {f: getattr(experiment, f) for f in ("key", "status", *EXPERIMENT_FIELDS)}
    if data.get("end_date") is not None:
        data["end_date"] = data["end_date"].isoformat()
    data["owner"] = experiment.owner.get_username() if experiment.owner_id else None
    data["variants"] = [
        {
            "key": v.key,
            "name": v.name,
            "weight": v.weight,
            "is_control": v.is_control,
            "value": v.value,
        }
        for v in experiment.variants.all()
    ]
    data["metrics"] = [
        {"metric": em.metric.key, "role": em.role, "margin": em.non_inferiority_margin}
        for em in experiment.experiment_metrics.select_related("metric")
    ]
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-12)
    return a == b


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_variants(variants: Sequence[dict[str, Any]]) -> None:
    if len(variants) < 2:
        raise DomainError(
            "An experiment needs at least two variants: a control and a treatment.", "variants"
        )
    keys = [v.get("key") or "" for v in variants]
    if any(not k for k in keys):
        raise DomainError("Every variant needs a key (e.g. control, treatment).", "variants")
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise DomainError(
            f"Variant keys must be unique ({', '.join(duplicates)} appears more than once).",
            "variants",
        )
    controls = sum(1 for v in variants if v.get("is_control"))
    if controls != 1:
        raise DomainError(
            f"Exactly one variant must be the control (found {controls}).", "variants"
        )
    for v in variants:
        weight = v.get("weight")
        if not _is_number(weight) or not 0 <= weight <= 1:
            raise DomainError(
                f"The weight of variant '{v['key']}' must be a number between 0 and 1.",
                "variants",
            )
    total = sum(float(v["weight"]) for v in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise DomainError(
            f"Variant weights must sum to 1 (they sum to {total:g}); "
            "e.g. 0.5 and 0.5 for an even split.",
            "variants",
        )


def _check_metrics(project: Project, metrics: Sequence[dict[str, Any]]) -> list[tuple]:
    resolved = []
    seen = set()
    for item in metrics:
        key = item["metric"]
        if key in seen:
            raise DomainError(f"Metric '{key}' is listed twice.", "metrics")
        seen.add(key)
        metric = Metric.objects.filter(project=project, key=key).first()
        if metric is None:
            raise DomainError(
                f"Unknown metric '{key}' in this project; add it to the metric catalog first.",
                "metrics",
            )
        role = item.get("role") or MetricRole.PRIMARY
        if role not in MetricRole.values:
            raise DomainError(
                f"Unknown metric role '{role}'; use {', '.join(MetricRole.values)}.", "metrics"
            )
        margin = item.get("non_inferiority_margin")
        if role == MetricRole.GUARDRAIL and margin is None:
            margin = 0.0
        if margin is not None and (not _is_number(margin) or not 0 <= float(margin) < 1):
            raise DomainError(
                f"Non-inferiority margin of '{key}' must be a relative lift in [0, 1) "
                "(0.02 tolerates a 2% change in the harmful direction).",
                "metrics",
            )
        resolved.append((metric, role, None if margin is None else float(margin)))
    return resolved


def _check_ramp(stages: Sequence[dict[str, Any]]) -> None:
    previous = 0.0
    for i, stage in enumerate(stages):
        coverage = stage.get("coverage")
        hours = stage.get("min_hours", 0)
        if not _is_number(coverage) or not 0 < coverage <= 1:
            raise DomainError(
                f"Ramp stage {i + 1}: coverage must be in (0, 1] (0.05 = 5% of units).",
                "ramp_stages",
            )
        if coverage <= previous:
            raise DomainError(
                f"Ramp stages must increase coverage (stage {i + 1} is {coverage:g}, "
                f"after {previous:g}).",
                "ramp_stages",
            )
        if not _is_number(hours) or not 0 <= hours <= MAX_RAMP_STAGE_HOURS:
            raise DomainError(
                f"Ramp stage {i + 1}: min_hours must be from 0 to {MAX_RAMP_STAGE_HOURS} "
                "(one year).",
                "ramp_stages",
            )
        units = stage.get("min_units")
        if units is not None and not (isinstance(units, int) and 1 <= units <= 10**9):
            raise DomainError(
                f"Ramp stage {i + 1}: min_units must be a whole number of units per arm from 1 "
                "to 1,000,000,000.",
                "ramp_stages",
            )
        previous = coverage


def _check_definition(experiment: Experiment) -> None:
    """Rules on the experiment row itself, phrased for the person who has to fix them."""
    if not _is_number(experiment.coverage) or not 0 <= experiment.coverage <= 1:
        raise DomainError("Coverage must be between 0 and 1 (0.2 = 20% of units).", "coverage")
    if not _is_number(experiment.alpha) or not 0 < experiment.alpha < 0.5:
        raise DomainError("Alpha must be between 0 and 0.5 (0.05 is usual).", "alpha")
    if not (experiment.hash_attribute or "").strip():
        raise DomainError(
            "Choose the attribute that identifies a unit (e.g. id, user_id, device_id).",
            "hash_attribute",
        )
    if not (experiment.seed or "").strip():
        raise DomainError("The seed must not be empty.", "seed")
    if experiment.targeting is None:
        experiment.targeting = {}
    problems = validate_condition(experiment.targeting)
    if problems:
        raise DomainError("Targeting: " + " ".join(problems), "targeting")
    start, end = experiment.layer_start, experiment.layer_end
    if not (_is_number(start) and _is_number(end) and 0 <= start < end <= 1):
        raise DomainError(
            "The layer range must satisfy 0 <= start < end <= 1 "
            "(e.g. 0 to 0.5 for the first half of the layer).",
            "layer",
        )
    planned = experiment.planned_sample_size
    if planned is not None and (
        not _is_number(planned)
        or planned != int(planned)
        or not 2 <= planned <= MAX_PLANNED_SAMPLE_SIZE
    ):
        raise DomainError(
            "The planned sample size counts units over all variants: a whole number from 2 to "
            f"{MAX_PLANNED_SAMPLE_SIZE:,}.",
            "planned_sample_size",
        )
    if experiment.mde is not None and (
        not _is_number(experiment.mde) or not 0 < experiment.mde <= MAX_MDE
    ):
        raise DomainError(
            f"The MDE must be a relative lift above 0 and at most {MAX_MDE:g} "
            "(0.05 = +5%; 10 = +1000%).",
            "mde",
        )
    if experiment.ramp_stages:
        _check_ramp(experiment.ramp_stages)
    experiment.full_clean(exclude=["owner"])


def _check_spec(experiment: Experiment) -> None:
    """The definition must stay servable: assignment builds this spec for every request."""
    try:
        experiment_spec(experiment, list(experiment.variants.all()))
    except ValueError as exc:
        raise DomainError(f"This definition cannot be served: {exc}.", "variants") from exc


def _check_owner(project: Project, owner: AbstractBaseUser | None) -> None:
    if owner is None or owner.is_superuser:
        return
    if not Membership.objects.filter(project=project, user=owner).exists():
        raise DomainError(
            f"The owner must be a member of this project ({owner.get_username()} is not).",
            "owner",
        )


def _write_children(
    experiment: Experiment,
    variants: Sequence[dict[str, Any]] | None,
    metrics: Sequence[dict[str, Any]] | None,
) -> None:
    if variants is not None:
        _check_variants(variants)
        experiment.variants.all().delete()
        for position, v in enumerate(variants):
            variant = Variant(
                experiment=experiment,
                key=v["key"],
                name=v.get("name") or v["key"],
                weight=float(v["weight"]),
                is_control=bool(v.get("is_control")),
                value=v.get("value"),
                position=position,
            )
            try:
                variant.full_clean(exclude=["experiment"])
            except ValidationError as exc:
                raise DomainError(
                    f"Variant '{v['key']}': " + " ".join(exc.messages), "variants"
                ) from exc
            variant.save()
    if metrics is not None:
        resolved = _check_metrics(experiment.project, metrics)
        experiment.experiment_metrics.all().delete()
        for metric, role, margin in resolved:
            ExperimentMetric.objects.create(
                experiment=experiment, metric=metric, role=role, non_inferiority_margin=margin
            )


@transaction.atomic
def experiment_create(
    *,
    project: Project,
    key: str,
    name: str,
    variants: Sequence[dict[str, Any]],
    metrics: Sequence[dict[str, Any]] = (),
    actor: AbstractBaseUser | None = None,
    owner: AbstractBaseUser | None = None,
    **fields: Any,
) -> Experiment:
    if Experiment.objects.filter(project=project, key=key).exists():
        raise DomainError(f"An experiment with key '{key}' already exists in this project.", "key")
    fields = {k: v for k, v in fields.items() if v is not None or k in ("planned_sample_size",)}
    unknown = sorted(set(fields) - set(EXPERIMENT_FIELDS))
    if unknown:
        raise DomainError(f"Unknown field '{unknown[0]}'.", unknown[0])
    owner = owner if owner is not None else _user(actor)
    _check_owner(project, owner)
    experiment = Experiment(project=project, key=key, name=name, owner=owner, **fields)
    _check_definition(experiment)
    try:
        with transaction.atomic():
            experiment.save()
    except IntegrityError as exc:  # a concurrent create with the same key
        raise DomainError(f"An experiment with key '{key}' already exists.", "key") from exc
    _write_children(experiment, variants, metrics)
    _check_spec(experiment)
    audit_log_record(
        project=project,
        experiment=experiment,
        action="experiment.create",
        target=key,
        actor=actor,
        after=experiment_snapshot(experiment),
    )
    return experiment


def _variant_definition(variants: Sequence[dict[str, Any]]) -> list[tuple]:
    """What bucketing and the served payload depend on (names are cosmetic)."""
    return [
        (
            v["key"],
            round(float(v["weight"]), 9),
            bool(v.get("is_control")),
            json.dumps(v.get("value"), sort_keys=True),
        )
        for v in variants
    ]


def _check_live_metrics(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> None:
    """While live, primaries and guardrails are pre-registered; secondaries may come and go."""
    new = {m["metric"]: m for m in after}
    for old in before:
        if old["role"] not in (MetricRole.PRIMARY, MetricRole.GUARDRAIL):
            continue
        item = new.get(old["metric"])
        margin = item.get("non_inferiority_margin") if item else None
        if old["role"] == MetricRole.GUARDRAIL and margin is None:
            margin = 0.0
        if (
            item is None
            or (item.get("role") or MetricRole.PRIMARY) != old["role"]
            or (old["role"] == MetricRole.GUARDRAIL and not _same(margin, old["margin"]))
        ):
            raise DomainError(
                f"'{old['metric']}' is a {old['role']} metric of a live experiment: it cannot be "
                "removed or changed (that would change what the experiment tests). "
                "You may add secondary metrics and guardrails.",
                "metrics",
            )
    old_keys = {m["metric"] for m in before}
    for key, item in new.items():
        if key not in old_keys and (item.get("role") or MetricRole.PRIMARY) == MetricRole.PRIMARY:
            raise DomainError(
                f"A primary metric cannot be added to a live experiment; add '{key}' "
                "as secondary or guardrail.",
                "metrics",
            )


@transaction.atomic
def experiment_update(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser | None = None,
    variants: Sequence[dict[str, Any]] | None = None,
    metrics: Sequence[dict[str, Any]] | None = None,
    **fields: Any,
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if "key" in fields and fields["key"] != experiment.key:
        raise DomainError("An experiment's key cannot change once created.", "key")
    fields.pop("key", None)
    fields.pop("status", None)
    owner_given = "owner" in fields
    owner = fields.pop("owner", None)
    before = experiment_snapshot(experiment)
    live = experiment.status != ExperimentStatus.DRAFT
    if experiment.status in FINISHED:
        raise DomainError(
            f"A {experiment.get_status_display().lower()} experiment cannot be edited; "
            "create a new experiment instead.",
            "status",
        )
    unknown = sorted(set(fields) - set(EXPERIMENT_FIELDS))
    if unknown:
        raise DomainError(f"Unknown field '{unknown[0]}'.", unknown[0])
    if live:
        for name in FROZEN_WHEN_LIVE:
            if name in fields and not _same(fields[name], getattr(experiment, name)):
                raise DomainError(
                    f"'{name}' is frozen once the experiment has started: changing it would "
                    "spoil the analysis. Conclude this experiment and start a new one instead.",
                    name,
                )
        if variants is not None:
            if _variant_definition(variants) != _variant_definition(before["variants"]):
                raise DomainError(
                    "Variants, weights and values are frozen once the experiment has started "
                    "(only their names may change). Conclude it and start a new experiment "
                    "to test something else.",
                    "variants",
                )
            for v in variants:
                if v.get("name"):
                    experiment.variants.filter(key=v["key"]).update(name=v["name"])
            variants = None
        if "coverage" in fields and fields["coverage"] < experiment.coverage - 1e-12:
            raise DomainError(
                f"Coverage may only go up while the experiment is live (now "
                f"{experiment.coverage:g}); roll back instead.",
                "coverage",
            )
        if metrics is not None:
            _check_live_metrics(before["metrics"], metrics)
        if "targeting" in fields and (fields["targeting"] or {}) != (experiment.targeting or {}):
            # A targeting change starts a new phase: the analysis window resets.
            experiment.phase += 1
            experiment.phase_started_at = timezone.now()
    for name, value in fields.items():
        setattr(experiment, name, value)
    if owner_given:
        _check_owner(experiment.project, owner)
        experiment.owner = owner
    if live and "ramp_stages" in fields:
        experiment.ramp_stage_index = _stage_index_for(experiment.ramp_stages, experiment.coverage)
    _check_definition(experiment)
    experiment.save()
    _write_children(experiment, variants, metrics)
    _check_spec(experiment)
    audit_log_record(
        project=experiment.project,
        experiment=experiment,
        action="experiment.update",
        target=experiment.key,
        actor=actor,
        before=before,
        after=experiment_snapshot(experiment),
    )
    return experiment


@transaction.atomic
def experiment_delete(*, experiment: Experiment, actor: AbstractBaseUser | None = None) -> None:
    """Only a draft can be deleted: a started experiment's history must stay."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != ExperimentStatus.DRAFT:
        raise DomainError(
            "Only a draft can be deleted; conclude or roll back a started experiment instead.",
            "status",
        )
    audit_log_record(
        project=experiment.project,
        action="experiment.delete",
        target=experiment.key,
        actor=actor,
        before=experiment_snapshot(experiment),
    )
    experiment.delete()


def _check_status(experiment: Experiment, action: str, allowed_from: Sequence[str]) -> None:
    if experiment.status not in allowed_from:
        allowed = " or ".join(ExperimentStatus(s).label.lower() for s in allowed_from)
        raise DomainError(
            f"Cannot {action} an experiment that is "
            f"{experiment.get_status_display().lower()} (only when {allowed}).",
            "status",
        )


def _transition(
    experiment: Experiment,
    *,
    allowed_from: Sequence[str],
    to: str,
    action: str,
    actor: AbstractBaseUser | None,
    extra: dict[str, Any] | None = None,
    note: dict[str, Any] | None = None,
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, action, allowed_from)
    before = {"status": experiment.status, "coverage": experiment.coverage}
    experiment.status = to
    for name, value in (extra or {}).items():
        setattr(experiment, name, value)
    experiment.save()
    after: dict[str, Any] = {"status": experiment.status, "coverage": experiment.coverage}
    if extra:
        after.update({k: v for k, v in extra.items() if k in ("decision_variant", "coverage")})
    after.update(note or {})
    audit_log_record(
        project=experiment.project,
        experiment=experiment,
        action=f"experiment.{action}",
        target=experiment.key,
        actor=actor,
        before=before,
        after=after,
    )
    return experiment


@transaction.atomic
def experiment_start(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, "start", [ExperimentStatus.DRAFT])
    variants = [
        {"key": v.key, "weight": v.weight, "is_control": v.is_control}
        for v in experiment.variants.all()
    ]
    _check_variants(variants)
    roles = set(experiment.experiment_metrics.values_list("role", flat=True))
    if not roles:
        raise DomainError("Add at least one metric before starting the experiment.", "metrics")
    if MetricRole.PRIMARY not in roles:
        raise DomainError(
            "Mark at least one metric as primary before starting: it decides whether to ship.",
            "metrics",
        )
    _check_spec(experiment)
    now = timezone.now()
    extra: dict[str, Any] = {"started_at": now, "phase_started_at": now}
    if experiment.ramp_stages:
        extra.update(
            coverage=float(experiment.ramp_stages[0]["coverage"]),
            ramp_stage_index=0,
            ramp_stage_started_at=now,
        )
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.DRAFT],
        to=ExperimentStatus.RUNNING,
        action="start",
        actor=actor,
        extra=extra,
    )


@transaction.atomic
def experiment_pause(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING],
        to=ExperimentStatus.PAUSED,
        action="pause",
        actor=actor,
    )


@transaction.atomic
def experiment_resume(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.PAUSED],
        to=ExperimentStatus.RUNNING,
        action="resume",
        actor=actor,
    )


def _stage_index_for(stages: Sequence[dict[str, Any]], coverage: float) -> int:
    """The last ramp stage whose coverage has been reached (0 before the first)."""
    index = 0
    for i, stage in enumerate(stages):
        if coverage >= float(stage["coverage"]) - 1e-12:
            index = i
    return index


@transaction.atomic
def experiment_ramp(
    *, experiment: Experiment, coverage: float, actor: AbstractBaseUser | None = None
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, "ramp", [ExperimentStatus.RUNNING, ExperimentStatus.PAUSED])
    if not _is_number(coverage) or not 0 < coverage <= 1:
        raise DomainError("Coverage must be a number in (0, 1] (0.5 = 50% of units).", "coverage")
    if coverage < experiment.coverage - 1e-12:
        raise DomainError(
            f"Coverage may only go up while live (now {experiment.coverage:g}); "
            "roll back to stop the experiment instead.",
            "coverage",
        )
    if abs(coverage - experiment.coverage) <= 1e-12:
        raise DomainError(
            f"Coverage is already {experiment.coverage:g}; choose a higher value.", "coverage"
        )
    extra: dict[str, Any] = {"coverage": float(coverage)}
    stages = experiment.ramp_stages or []
    if stages:
        due = ramp_stage_due_at(experiment)
        now = timezone.now()
        if due is not None and now < due:
            index = min(experiment.ramp_stage_index, len(stages) - 1)
            hours = float(stages[index].get("min_hours", 0))
            raise DomainError(
                f"Ramp stage {index + 1} ({float(stages[index]['coverage']):.0%}) must run for "
                f"at least {hours:g} h before coverage goes up; it can advance after "
                f"{due:%Y-%m-%d %H:%M} UTC. Edit the ramp plan to change its duration.",
                "coverage",
            )
        index = _stage_index_for(stages, coverage)
        if index != experiment.ramp_stage_index or coverage > float(stages[-1]["coverage"]):
            extra.update(ramp_stage_index=index, ramp_stage_started_at=now)
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=experiment.status,
        action="ramp",
        actor=actor,
        extra=extra,
    )


@transaction.atomic
def experiment_conclude(
    *, experiment: Experiment, decision: str, actor: AbstractBaseUser | None = None
) -> Experiment:
    variants = list(experiment.variants.values_list("key", "is_control"))
    keys = [k for k, _ in variants]
    if decision not in keys:
        control = next((k for k, c in variants if c), keys[0] if keys else "control")
        raise DomainError(
            f"Decision must be one of the variant keys: {', '.join(keys)} "
            f"(choose '{control}' to keep the control).",
            "decision",
        )
    is_control = dict(variants)[decision]
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.CONCLUDED,
        action="conclude",
        actor=actor,
        extra={"decision_variant": decision, "ended_at": timezone.now()},
        note={"decision": "keep control" if is_control else f"ship {decision}"},
    )


@transaction.atomic
def experiment_rollback(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None, reason: str = ""
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.ROLLED_BACK,
        action="rollback",
        actor=actor,
        extra={"ended_at": timezone.now()},
        note={"reason": reason} if reason else None,
    )
