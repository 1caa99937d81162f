"""Segments: saved audiences (a condition plus include and exclude lists of unit ids),
reused by flag rules and experiments; a segment in use cannot be deleted."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from core.errors import DomainError
from experiments.models import Project, Segment
from experiments.services import audit_log_record
from flags.models import FlagEnvironment
from flags.services.access import is_admin, require
from flags.services.rules import check_condition, check_key, check_name, check_unit_ids

SEGMENT_FIELDS = ("name", "description", "condition", "include", "exclude")


def segment_snapshot(segment: Segment) -> dict[str, Any]:
    return {
        "key": segment.key,
        "name": segment.name,
        "description": segment.description,
        "condition": segment.condition,
        "include": segment.include,
        "exclude": segment.exclude,
    }


def _check(segment: Segment) -> None:
    segment.name = check_name(segment.name)
    if not isinstance(segment.description, str) or len(segment.description) > 5000:
        raise DomainError("The description is a text of at most 5,000 characters.", "description")
    segment.condition = check_condition(segment.condition, "condition") or {}
    segment.include = check_unit_ids(segment.include, "include")
    segment.exclude = check_unit_ids(segment.exclude, "exclude")


def segment_users(segment: Segment) -> list[str]:
    """Where the segment is used: "flag:<key>@<environment>" and "experiment:<key>"."""
    used = []
    configs = FlagEnvironment.objects.filter(flag__project_id=segment.project_id).values_list(
        "flag__key", "environment__key", "rules"
    )
    for flag_key, env_key, rules in configs:
        if any(r.get("segment") == segment.key for r in rules or []):
            used.append(f"flag:{flag_key}@{env_key}")
    used += [f"experiment:{k}" for k in segment.experiments.values_list("key", flat=True)]
    return sorted(used)


@transaction.atomic
def segment_create(
    *,
    project: Project,
    key: str,
    name: str,
    actor: AbstractBaseUser | None = None,
    description: str = "",
    condition: dict[str, Any] | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> Segment:
    require(project, actor, "edit")
    check_key(key)
    if Segment.objects.filter(project=project, key=key).exists():
        raise DomainError(f"A segment with key '{key}' already exists in this project.", "key")
    segment = Segment(
        project=project,
        key=key,
        name=name,
        description=description or "",
        condition=condition or {},
        include=include or [],
        exclude=exclude or [],
    )
    _check(segment)
    try:
        with transaction.atomic():
            segment.save()
    except IntegrityError as exc:
        raise DomainError(f"A segment with key '{key}' already exists.", "key") from exc
    audit_log_record(
        project=project,
        action="segment.create",
        target=f"segment:{key}",
        actor=actor,
        after=segment_snapshot(segment),
    )
    return segment


@transaction.atomic
def segment_update(
    *, segment: Segment, actor: AbstractBaseUser | None = None, **fields: Any
) -> Segment:
    segment = Segment.objects.select_for_update().select_related("project").get(pk=segment.pk)
    require(segment.project, actor, "edit")
    if "key" in fields and fields.pop("key") != segment.key:
        raise DomainError("A segment's key cannot change once created.", "key")
    unknown = sorted(set(fields) - set(SEGMENT_FIELDS))
    if unknown:
        raise DomainError(f"Unknown field '{unknown[0]}'.", unknown[0])
    in_production = _production_users(segment)
    if in_production and not is_admin(segment.project, actor):
        # Editing the audience of a production rule changes production: the production rule
        # (admins only) applies to it as to the rule itself.
        raise PermissionDenied(
            f"The segment is used in production ({', '.join(in_production[:3])}): "
            "only an admin may change it."
        )
    before = segment_snapshot(segment)
    for name, value in fields.items():
        setattr(segment, name, value)
    _check(segment)
    segment.save()  # bumps updated_at: every flag using it is served anew
    # The experiments targeting it are served anew too: their served version is their
    # updated_at (assignments.selectors.project_specs).
    segment.experiments.update(updated_at=timezone.now())
    audit_log_record(
        project=segment.project,
        action="segment.update",
        target=f"segment:{segment.key}",
        actor=actor,
        before=before,
        after=segment_snapshot(segment),
    )
    return segment


def _production_users(segment: Segment) -> list[str]:
    """The production flag configurations whose rules use the segment."""
    configs = FlagEnvironment.objects.filter(
        flag__project_id=segment.project_id, environment__production=True
    ).values_list("flag__key", "environment__key", "rules")
    return [
        f"flag:{flag_key}@{env_key}"
        for flag_key, env_key, rules in configs
        if any(r.get("segment") == segment.key for r in rules or [])
    ]


def _refuse_in_use(used: list[str]) -> None:
    if used:
        raise DomainError(
            f"The segment is used by {', '.join(used[:5])}"
            + (f" and {len(used) - 5} more" if len(used) > 5 else "")
            + ": remove it there first.",
            "key",
        )


@transaction.atomic
def segment_delete(*, segment: Segment, actor: AbstractBaseUser | None = None) -> None:
    """Refused while a flag rule or an experiment uses the segment."""
    segment = Segment.objects.select_for_update().select_related("project").get(pk=segment.pk)
    require(segment.project, actor, "edit")
    _refuse_in_use(segment_users(segment))
    audit_log_record(
        project=segment.project,
        action="segment.delete",
        target=f"segment:{segment.key}",
        actor=actor,
        before=segment_snapshot(segment),
    )
    try:
        with transaction.atomic():
            segment.delete()
    except ProtectedError as exc:  # an experiment took it up since the check above
        _refuse_in_use(segment_users(segment))
        raise DomainError("The segment is in use: remove it there first.", "key") from exc
