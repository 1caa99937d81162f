"""Flag definitions: create (one disabled config per environment), update, delete."""

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.models import Environment, Experiment, Project
from experiments.services import audit_log_record
from experiments.services.rules import _check_owner, check_tags
from flags.models import Flag, FlagEnvironment, FlagType
from flags.services.access import require
from flags.services.rules import (
    check_key,
    check_name,
    check_prerequisites,
    check_type,
    check_variation_key,
    check_variations,
)

FLAG_FIELDS = (
    "name",
    "description",
    "type",
    "variations",
    "off_variation",
    "tags",
    "owner",
    "temporary",
    "archived",
    "prerequisites",
)


def flag_snapshot(flag: Flag) -> dict[str, Any]:
    """A JSON-able picture of the definition, for the audit log."""
    return {
        "key": flag.key,
        "name": flag.name,
        "description": flag.description,
        "type": flag.type,
        "variations": flag.variations,
        "off_variation": flag.off_variation,
        "tags": flag.tags,
        "owner": flag.owner.get_username() if flag.owner_id else None,
        "temporary": flag.temporary,
        "archived": flag.archived,
        "prerequisites": flag.prerequisites,
    }


def _default_off(flag_type: str, variations: Sequence[dict[str, Any]]) -> str:
    """The off variation when none is given: a boolean flag's false, else the first."""
    if flag_type == FlagType.BOOLEAN:
        for v in variations:
            if v["value"] is False:
                return v["key"]
    return variations[0]["key"]


def _check_definition(flag: Flag) -> None:
    check_name(flag.name)
    if not isinstance(flag.description, str) or len(flag.description) > 5000:
        raise DomainError("The description is a text of at most 5,000 characters.", "description")
    check_type(flag.type)
    flag.variations = check_variations(flag.type, flag.variations)
    keys = [v["key"] for v in flag.variations]
    check_variation_key(keys, flag.off_variation, "off_variation", "The off variation")
    flag.tags = check_tags(flag.tags)
    flag.prerequisites = check_prerequisites(flag.project, flag.key, flag.prerequisites)
    for name in ("temporary", "archived"):
        if not isinstance(getattr(flag, name), bool):
            raise DomainError(f"'{name}' is true or false.", name)


def _check_key_free(project: Project, key: str) -> None:
    if Flag.objects.filter(project=project, key=key).exists():
        raise DomainError(f"A flag with key '{key}' already exists in this project.", "key")
    if Experiment.objects.filter(project=project, key=key).exists():
        raise DomainError(
            f"'{key}' is the key of an experiment of this project; flags and experiments share "
            "one key space (both are features of the SDK payload).",
            "key",
        )


@transaction.atomic
def flag_create(
    *,
    project: Project,
    key: str,
    name: str,
    actor: AbstractBaseUser | None = None,
    type: str = FlagType.BOOLEAN,
    variations: Sequence[dict[str, Any]] | None = None,
    off_variation: str | None = None,
    default_variation: str | None = None,
    description: str = "",
    tags: Sequence[str] = (),
    owner: AbstractBaseUser | None = None,
    temporary: bool = True,
    prerequisites: Sequence[dict[str, Any]] = (),
) -> Flag:
    """A flag, off in every environment; ``default_variation`` (default: the off variation)
    is what each environment serves once turned on and no rule matches. A boolean flag without
    variations gets on (true) and off (false)."""
    require(project, actor, "edit")
    check_key(key)
    _check_key_free(project, key)
    check_type(type)
    if variations is None and type == FlagType.BOOLEAN:
        variations = [{"key": "on", "value": True}, {"key": "off", "value": False}]
    variations = check_variations(type, variations)
    if owner is None and actor is not None and actor.is_authenticated:
        owner = actor
    _check_owner(project, owner)
    flag = Flag(
        project=project,
        key=key,
        name=name,
        description=description or "",
        type=type,
        variations=variations,
        off_variation=off_variation or _default_off(type, variations),
        tags=tags if tags is not None else [],
        owner=owner,
        temporary=temporary,
        prerequisites=prerequisites if prerequisites is not None else [],
    )
    _check_definition(flag)
    keys = [v["key"] for v in flag.variations]
    default = flag.off_variation if default_variation is None else default_variation
    check_variation_key(keys, default, "default_variation", "The default variation")
    try:
        with transaction.atomic():
            flag.save()
    except IntegrityError as exc:  # a concurrent create with the same key
        raise DomainError(f"A flag with key '{key}' already exists.", "key") from exc
    FlagEnvironment.objects.bulk_create(
        FlagEnvironment(flag=flag, environment=env, enabled=False, default_variation=default)
        for env in Environment.objects.filter(project=project)
    )
    audit_log_record(
        project=project,
        action="flag.create",
        target=f"flag:{key}",
        actor=actor,
        after=flag_snapshot(flag),
    )
    return flag


def _check_references(flag: Flag) -> None:
    """The variations still cover what the environments, schedules and other flags use."""
    keys = {v["key"] for v in flag.variations}
    for config in flag.configs.select_related("environment"):
        used = {config.default_variation}
        for rule in config.rules or []:
            used.add(rule.get("variation"))
            used.update((rule.get("weights") or {}).keys())
        used.discard(None)
        missing = sorted(used - keys)
        if missing:
            raise DomainError(
                f"Variation '{missing[0]}' is used in {config.environment.key} (its default or "
                "rules): change that first.",
                "variations",
            )
    for other in Flag.objects.filter(project=flag.project).exclude(pk=flag.pk):
        for p in other.prerequisites or []:
            if p.get("flag") == flag.key and not set(p.get("variations") or []) <= keys:
                raise DomainError(
                    f"Flag '{other.key}' needs variations of this flag that would no longer "
                    "exist (its prerequisites).",
                    "variations",
                )


def _check_archivable(flag: Flag) -> None:
    if flag.configs.filter(environment__production=True, enabled=True).exists():
        raise DomainError(
            "The flag is on in production: turn it off there before archiving it.", "archived"
        )


@transaction.atomic
def flag_update(*, flag: Flag, actor: AbstractBaseUser | None = None, **fields: Any) -> Flag:
    """Change the definition (not the key). Archiving needs the flag off in production."""
    flag = (
        Flag.objects.select_for_update(of=("self",))  # owner is nullable: lock the flag only
        .select_related("project", "owner")
        .get(pk=flag.pk)
    )
    require(flag.project, actor, "edit")
    if "key" in fields and fields.pop("key") != flag.key:
        raise DomainError("A flag's key cannot change once created.", "key")
    unknown = sorted(set(fields) - set(FLAG_FIELDS))
    if unknown:
        raise DomainError(f"Unknown field '{unknown[0]}'.", unknown[0])
    before = flag_snapshot(flag)
    owner_given = "owner" in fields
    owner = fields.pop("owner", None)
    for name, value in fields.items():
        setattr(flag, name, value)
    if owner_given:
        _check_owner(flag.project, owner)
        flag.owner = owner
    _check_definition(flag)
    _check_references(flag)
    if flag.archived and not before["archived"]:
        _check_archivable(flag)
    flag.save()
    after = flag_snapshot(flag)
    if after != before:
        audit_log_record(
            project=flag.project,
            action="flag.update",
            target=f"flag:{flag.key}",
            actor=actor,
            before=before,
            after=after,
        )
    return flag


@transaction.atomic
def flag_delete(*, flag: Flag, actor: AbstractBaseUser | None = None) -> None:
    """Only an archived flag, and none that another flag needs as a prerequisite."""
    flag = Flag.objects.select_for_update().select_related("project").get(pk=flag.pk)
    require(flag.project, actor, "edit")
    if not flag.archived:
        raise DomainError("Archive the flag first; only archived flags can be deleted.", "archived")
    for other in Flag.objects.filter(project=flag.project).exclude(pk=flag.pk):
        if any(p.get("flag") == flag.key for p in other.prerequisites or []):
            raise DomainError(
                f"Flag '{other.key}' has this flag as a prerequisite: remove it there first.",
                "key",
            )
    audit_log_record(
        project=flag.project,
        action="flag.delete",
        target=f"flag:{flag.key}",
        actor=actor,
        before=flag_snapshot(flag),
    )
    flag.delete()


def flag_touch(flag: Flag) -> None:
    """Bump the flag's updated_at (serving and the flag list read it) after a config change."""
    Flag.objects.filter(pk=flag.pk).update(updated_at=timezone.now())
