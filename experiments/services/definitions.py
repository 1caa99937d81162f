"""Experiment definitions: create, update (what a live experiment may still change), delete."""

import json
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.models import (
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    MetricRole,
    Project,
    Variant,
)
from experiments.services.audit import _user, audit_log_record
from experiments.services.rules import (
    FINISHED,
    FROZEN_WHEN_LIVE,
    _check_definition,
    _check_metrics,
    _check_owner,
    _check_spec,
    _same,
    _stage_index_for,
    check_layer_free,
    check_variants,
    layer_lock,
    resolve_segment,
)

LAYER_FIELDS = ("layer", "layer_start", "layer_end")

# "Not given" for the segment of an update (None means: target no segment).
_UNCHANGED: Any = object()

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
    "tags",
)


def experiment_snapshot(experiment: Experiment) -> dict[str, Any]:
    """A JSON-able picture of the definition, for the audit log."""
    data = {f: getattr(experiment, f) for f in ("key", "status", *EXPERIMENT_FIELDS)}
    if data.get("end_date") is not None:
        data["end_date"] = data["end_date"].isoformat()
    data["owner"] = experiment.owner.get_username() if experiment.owner_id else None
    data["segment"] = experiment.segment.key if experiment.segment_id else None
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


def _write_children(
    experiment: Experiment,
    variants: Sequence[dict[str, Any]] | None,
    metrics: Sequence[dict[str, Any]] | None,
) -> None:
    if variants is not None:
        check_variants(variants)
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
    segment: str | None = None,
    **fields: Any,
) -> Experiment:
    """A draft. ``segment`` is the key of a saved segment of the project (AND-ed with the
    targeting condition), or None / "" for none."""
    if Experiment.objects.filter(project=project, key=key).exists():
        raise DomainError(f"An experiment with key '{key}' already exists in this project.", "key")
    # Flags and experiments share one key space (both are SDK features). The reverse relation
    # reads the flags table without importing the flags app, which sits above this layer.
    if project.flags.filter(key=key).exists():
        raise DomainError(
            f"'{key}' is the key of a flag of this project; flags and experiments share one key "
            "space (both are features of the SDK payload).",
            "key",
        )
    fields = {k: v for k, v in fields.items() if v is not None or k in ("planned_sample_size",)}
    unknown = sorted(set(fields) - set(EXPERIMENT_FIELDS))
    if unknown:
        raise DomainError(f"Unknown field '{unknown[0]}'.", unknown[0])
    owner = owner if owner is not None else _user(actor)
    _check_owner(project, owner)
    experiment = Experiment(
        project=project,
        key=key,
        name=name,
        owner=owner,
        segment=resolve_segment(project, segment),
        **fields,
    )
    _check_definition(experiment)
    if experiment.layer:
        layer_lock(project, experiment.layer)
        check_layer_free(experiment)
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


def _check_live_update(
    experiment: Experiment,
    before: dict[str, Any],
    fields: dict[str, Any],
    variants: Sequence[dict[str, Any]] | None,
    metrics: Sequence[dict[str, Any]] | None,
) -> None:
    """What a started experiment may still change: refuse the frozen design, rename variants
    in place (the caller writes no variant rows), start a new phase when the audience (the
    targeting condition or the segment) changes."""
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
    if "coverage" in fields and fields["coverage"] < experiment.coverage - 1e-12:
        raise DomainError(
            f"Coverage may only go up while the experiment is live (now "
            f"{experiment.coverage:g}); roll back instead.",
            "coverage",
        )
    if metrics is not None:
        _check_live_metrics(before["metrics"], metrics)
    targeting_changed = "targeting" in fields and (fields["targeting"] or {}) != (
        experiment.targeting or {}
    )
    segment_changed = (
        "segment" in fields
        and (fields["segment"].pk if fields["segment"] else None) != experiment.segment_id
    )
    if targeting_changed or segment_changed:
        # A change of audience starts a new phase: the analysis window resets.
        experiment.phase += 1
        experiment.phase_started_at = timezone.now()


@transaction.atomic
def experiment_update(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser | None = None,
    variants: Sequence[dict[str, Any]] | None = None,
    metrics: Sequence[dict[str, Any]] | None = None,
    segment: Any = _UNCHANGED,
    **fields: Any,
) -> Experiment:
    """``segment``: a segment key of the project, or None / "" for none; left out: unchanged."""
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
    if segment is not _UNCHANGED:
        fields["segment"] = resolve_segment(experiment.project, segment)
    if live:
        _check_live_update(experiment, before, fields, variants, metrics)
        variants = None
    for name, value in fields.items():
        setattr(experiment, name, value)
    if owner_given:
        _check_owner(experiment.project, owner)
        experiment.owner = owner
    if live and "ramp_stages" in fields:
        experiment.ramp_stage_index = _stage_index_for(experiment.ramp_stages, experiment.coverage)
    _check_definition(experiment)
    if not live and experiment.layer and any(f in fields for f in LAYER_FIELDS):
        layer_lock(experiment.project, experiment.layer)
        check_layer_free(experiment)
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
