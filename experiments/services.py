"""Writes on experiment definitions. Every state rule lives here and raises DomainError."""

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.api import DomainError
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
)

WEIGHT_TOLERANCE = 1e-6
# Fields of a running experiment that would spoil its statistics if they changed.
FROZEN_WHEN_LIVE = ("seed", "hash_attribute")


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else "system"


def audit_log_record(
    *,
    project: Project,
    action: str,
    target: str,
    actor: AbstractBaseUser | None = None,
    experiment: Experiment | None = None,
    before: Any = None,
    after: Any = None,
) -> AuditLog:
    return AuditLog.objects.create(
        project=project,
        experiment=experiment,
        actor=actor,
        actor_label=_actor_label(actor),
        action=action,
        target=target,
        before=before,
        after=after,
    )


# --- projects, members, API keys ------------------------------------------------------------


@transaction.atomic
def project_create(*, slug: str, name: str, owner: AbstractBaseUser | None = None) -> Project:
    if Project.objects.filter(slug=slug).exists():
        raise DomainError(f"A project with slug '{slug}' already exists.", field="slug")
    project = Project(slug=slug, name=name)
    project.full_clean()
    project.save()
    if owner is not None:
        Membership.objects.create(user=owner, project=project, role=Role.ADMIN)
    audit_log_record(project=project, action="project.create", target=slug, actor=owner)
    return project


@transaction.atomic
def membership_set(
    *, project: Project, user: AbstractBaseUser, role: str, actor: AbstractBaseUser | None = None
) -> Membership:
    if role not in Role.values:
        raise DomainError(f"Unknown role '{role}'; use one of {', '.join(Role.values)}.", "role")
    membership, _ = Membership.objects.update_or_create(
        user=user, project=project, defaults={"role": role}
    )
    audit_log_record(
        project=project,
        action="member.set",
        target=user.get_username(),
        actor=actor,
        after={"role": role},
    )
    return membership


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
    prefix = secrets.token_hex(6)
    secret = f"abk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        project=project,
        name=name,
        prefix=prefix,
        hashed_secret=hash_api_secret(secret),
        scopes=scopes,
        created_by=actor if actor is not None and actor.is_authenticated else None,
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


def _metric_snapshot(metric: Metric) -> dict[str, Any]:
    return {f: getattr(metric, f) for f in ("key", *METRIC_FIELDS)}


def _metric_check(metric: Metric) -> None:
    if metric.kind == "ratio" and not metric.denominator_event:
        raise DomainError("A ratio metric needs a denominator event.", "denominator_event")
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
    for name, value in fields.items():
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
    data["variants"] = [
        {"key": v.key, "weight": v.weight, "is_control": v.is_control, "value": v.value}
        for v in experiment.variants.all()
    ]
    data["metrics"] = [
        {"metric": em.metric.key, "role": em.role, "margin": em.non_inferiority_margin}
        for em in experiment.experiment_metrics.select_related("metric")
    ]
    return data


def _check_variants(variants: Sequence[dict[str, Any]]) -> None:
    if len(variants) < 2:
        raise DomainError("An experiment needs at least two variants.", "variants")
    keys = [v["key"] for v in variants]
    if len(set(keys)) != len(keys):
        raise DomainError("Variant keys must be unique.", "variants")
    controls = sum(1 for v in variants if v.get("is_control"))
    if controls != 1:
        raise DomainError(
            f"Exactly one variant must be the control (found {controls}).", "variants"
        )
    total = sum(float(v["weight"]) for v in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise DomainError(f"Variant weights must sum to 1 (they sum to {total:g}).", "variants")


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
            raise DomainError(f"Unknown metric '{key}' in this project.", "metrics")
        role = item.get("role", MetricRole.PRIMARY)
        if role not in MetricRole.values:
            raise DomainError(f"Unknown metric role '{role}'.", "metrics")
        margin = item.get("non_inferiority_margin")
        if role == MetricRole.GUARDRAIL and margin is None:
            margin = 0.0
        if margin is not None and not 0 <= float(margin) < 1:
            raise DomainError(
                f"Non-inferiority margin of '{key}' must be a relative lift in [0, 1).", "metrics"
            )
        resolved.append((metric, role, margin))
    return resolved


def _check_ramp(stages: Sequence[dict[str, Any]]) -> None:
    previous = 0.0
    for i, stage in enumerate(stages):
        coverage = stage.get("coverage")
        hours = stage.get("min_hours", 0)
        if not isinstance(coverage, int | float) or not 0 < coverage <= 1:
            raise DomainError(f"Ramp stage {i + 1}: coverage must be in (0, 1].", "ramp_stages")
        if coverage <= previous:
            raise DomainError("Ramp stages must increase coverage.", "ramp_stages")
        if not isinstance(hours, int | float) or hours < 0:
            raise DomainError(f"Ramp stage {i + 1}: min_hours must be >= 0.", "ramp_stages")
        previous = coverage


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
            variant.full_clean(exclude=["experiment"])
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
    **fields: Any,
) -> Experiment:
    if Experiment.objects.filter(project=project, key=key).exists():
        raise DomainError(f"An experiment with key '{key}' already exists in this project.", "key")
    fields = {k: v for k, v in fields.items() if v is not None or k in ("planned_sample_size",)}
    if fields.get("ramp_stages"):
        _check_ramp(fields["ramp_stages"])
    experiment = Experiment(project=project, key=key, name=name, owner=_user(actor), **fields)
    experiment.full_clean()
    try:
        experiment.save()
    except IntegrityError as exc:  # a concurrent create with the same key
        raise DomainError(f"An experiment with key '{key}' already exists.", "key") from exc
    _write_children(experiment, variants, metrics)
    audit_log_record(
        project=project,
        experiment=experiment,
        action="experiment.create",
        target=key,
        actor=actor,
        after=experiment_snapshot(experiment),
    )
    return experiment


def _user(actor: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return actor if actor is not None and actor.is_authenticated else None


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
    before = experiment_snapshot(experiment)
    live = experiment.status != ExperimentStatus.DRAFT
    if live:
        if experiment.status in (ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK):
            raise DomainError(f"A {experiment.status} experiment cannot be edited.", "status")
        for name in FROZEN_WHEN_LIVE:
            if name in fields and fields[name] != getattr(experiment, name):
                raise DomainError(f"'{name}' is frozen once the experiment has started.", name)
        if variants is not None and _variant_shape(variants) != _variant_shape(before["variants"]):
            raise DomainError(
                "Variants and weights are frozen once the experiment has started.", "variants"
            )
        variants = None
        if "coverage" in fields and fields["coverage"] < experiment.coverage - 1e-12:
            raise DomainError(
                "Coverage may only go up while the experiment is live; roll back instead.",
                "coverage",
            )
        if "targeting" in fields and fields["targeting"] != experiment.targeting:
            # A targeting change starts a new phase: the analysis window resets.
            experiment.phase += 1
            experiment.phase_started_at = timezone.now()
    if fields.get("ramp_stages"):
        _check_ramp(fields["ramp_stages"])
    for name, value in fields.items():
        if name not in EXPERIMENT_FIELDS:
            raise DomainError(f"Unknown field '{name}'.", name)
        setattr(experiment, name, value)
    experiment.full_clean()
    experiment.save()
    _write_children(experiment, variants, metrics)
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


def _variant_shape(variants: Sequence[dict[str, Any]]) -> list[tuple]:
    return [(v["key"], round(float(v["weight"]), 9), bool(v.get("is_control"))) for v in variants]


def _transition(
    experiment: Experiment,
    *,
    allowed_from: Sequence[str],
    to: str,
    action: str,
    actor: AbstractBaseUser | None,
    extra: dict[str, Any] | None = None,
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status not in allowed_from:
        raise DomainError(
            f"Cannot {action} an experiment that is {experiment.status} "
            f"(only from {' or '.join(allowed_from)}).",
            "status",
        )
    before = {"status": experiment.status, "coverage": experiment.coverage}
    experiment.status = to
    for name, value in (extra or {}).items():
        setattr(experiment, name, value)
    experiment.save()
    after = {"status": experiment.status, "coverage": experiment.coverage}
    if extra:
        after.update({k: v for k, v in extra.items() if k in ("decision_variant", "coverage")})
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
    variants = [
        {"key": v.key, "weight": v.weight, "is_control": v.is_control}
        for v in experiment.variants.all()
    ]
    _check_variants(variants)
    if not experiment.experiment_metrics.exists():
        raise DomainError("Add at least one metric before starting the experiment.", "metrics")
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


@transaction.atomic
def experiment_ramp(
    *, experiment: Experiment, coverage: float, actor: AbstractBaseUser | None = None
) -> Experiment:
    if not isinstance(coverage, int | float) or not 0 < coverage <= 1:
        raise DomainError("Coverage must be a number in (0, 1].", "coverage")
    if coverage < experiment.coverage - 1e-12:
        raise DomainError(
            f"Coverage may only go up while live (now {experiment.coverage:g}); "
            "roll back to stop the experiment instead.",
            "coverage",
        )
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=experiment.status,
        action="ramp",
        actor=actor,
        extra={"coverage": float(coverage)},
    )


@transaction.atomic
def experiment_conclude(
    *, experiment: Experiment, decision: str, actor: AbstractBaseUser | None = None
) -> Experiment:
    keys = list(experiment.variants.values_list("key", flat=True))
    if decision not in keys:
        raise DomainError(
            f"Decision must be one of the variant keys: {', '.join(keys)}.", "decision"
        )
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.CONCLUDED,
        action="conclude",
        actor=actor,
        extra={"decision_variant": decision, "ended_at": timezone.now()},
    )


@transaction.atomic
def experiment_rollback(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None, reason: str = ""
) -> Experiment:
    experiment = _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.ROLLED_BACK,
        action="rollback",
        actor=actor,
        extra={"ended_at": timezone.now()},
    )
    if reason:
        AuditLog.objects.filter(experiment=experiment, action="experiment.rollback").update(
            after={"status": ExperimentStatus.ROLLED_BACK, "reason": reason}
        )
    return experiment
