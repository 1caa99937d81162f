"""The project holdout: create, edit, start, end and delete, audited (docs/analysts.md
"Holdouts"). A started holdout's share and seed are frozen (changing them would move units
between the holdout and everyone else); an ended holdout stays ended; one runs at a time."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.models import Holdout, Project
from experiments.services.audit import audit_log_record
from experiments.services.rules import is_number

HOLDOUT_MAX_SHARE = 0.2  # at most a fifth of the units go without every shipped change
HOLDOUT_FIELDS = ("name", "description", "share", "seed")
HOLDOUT_FROZEN_WHEN_STARTED = ("share", "seed")
SEED_MAX_LENGTH = 64


def _snapshot(holdout: Holdout) -> dict[str, Any]:
    return {
        "id": holdout.pk,
        **{name: getattr(holdout, name) for name in HOLDOUT_FIELDS},
        "status": holdout.status,
        "started_at": holdout.started_at.isoformat() if holdout.started_at else None,
        "ended_at": holdout.ended_at.isoformat() if holdout.ended_at else None,
    }


def _target(holdout: Holdout) -> str:
    return f"holdout:{holdout.pk}"


def _check(holdout: Holdout) -> None:
    if not isinstance(holdout.name, str) or not holdout.name.strip():
        raise DomainError("Give the holdout a name.", "name")
    share = holdout.share
    if not is_number(share) or not 0 < share <= HOLDOUT_MAX_SHARE:
        raise DomainError(
            f"The holdout's share must be more than 0 and at most {HOLDOUT_MAX_SHARE:g} "
            f"({HOLDOUT_MAX_SHARE:.0%} of units); 0.05 holds out 5%.",
            "share",
        )
    seed = holdout.seed
    if not isinstance(seed, str) or not seed or len(seed) > SEED_MAX_LENGTH or seed != seed.strip():
        raise DomainError(
            f"The seed must be 1 to {SEED_MAX_LENGTH} characters without surrounding spaces "
            "(leave it out for a random one).",
            "seed",
        )
    holdout.full_clean()


def _audit(holdout: Holdout, action: str, actor: AbstractBaseUser | None, before: Any) -> None:
    audit_log_record(
        project=holdout.project,
        action=f"holdout.{action}",
        target=_target(holdout),
        actor=actor,
        before=before,
        after=_snapshot(holdout) if action != "delete" else None,
    )


@transaction.atomic
def holdout_create(
    *,
    project: Project,
    name: str,
    share: float,
    seed: str | None = None,
    description: str = "",
    actor: AbstractBaseUser | None = None,
) -> Holdout:
    """A draft holdout: it holds nobody out until it is started."""
    holdout = Holdout(project=project, name=name, share=share, description=description or "")
    if seed is not None:
        holdout.seed = seed
    _check(holdout)
    holdout.save()
    _audit(holdout, "create", actor, None)
    return holdout


@transaction.atomic
def holdout_update(
    *, holdout: Holdout, actor: AbstractBaseUser | None = None, **fields: Any
) -> Holdout:
    """Change the fields given. Name and description may always change; share and seed only
    before the holdout starts."""
    holdout = Holdout.objects.select_for_update().select_related("project").get(pk=holdout.pk)
    before = _snapshot(holdout)
    for name, value in fields.items():
        if name not in HOLDOUT_FIELDS:
            raise DomainError(f"Unknown holdout field '{name}'.", name)
        if (
            name in HOLDOUT_FROZEN_WHEN_STARTED
            and holdout.status != "draft"
            and value != getattr(holdout, name)
        ):
            raise DomainError(
                f"The holdout has started: its {name} is frozen (changing it would move units "
                "between the holdout and everyone else). End it and start a new one instead.",
                name,
            )
        if name == "description" and value is None:
            value = ""
        setattr(holdout, name, value)
    _check(holdout)
    holdout.save()
    _audit(holdout, "update", actor, before)
    return holdout


@transaction.atomic
def holdout_start(*, holdout: Holdout, actor: AbstractBaseUser | None = None) -> Holdout:
    """Start holding units out now: every serving path leaves the holdout's units out of
    experiments and rollouts from this moment (docs/flags.md "Holdout")."""
    # Lock the project's row: two starts in one project queue here, and the second sees the first.
    Project.objects.select_for_update().filter(pk=holdout.project_id).first()
    holdout = Holdout.objects.select_for_update().select_related("project").get(pk=holdout.pk)
    if holdout.status != "draft":
        raise DomainError(
            f"The holdout is {holdout.status}: only a draft holdout can start.", "status"
        )
    running = Holdout.objects.filter(project_id=holdout.project_id, enabled=True).first()
    if running is not None:
        raise DomainError(
            f"Holdout '{running.name}' is already running in this project: end it first "
            "(one holdout at a time).",
            "enabled",
        )
    before = _snapshot(holdout)
    holdout.enabled = True
    holdout.started_at = timezone.now()
    try:
        with transaction.atomic():
            holdout.save()
    except IntegrityError as exc:  # a concurrent start won (the database keeps one)
        raise DomainError("Another holdout started meanwhile: end it first.", "enabled") from exc
    _audit(holdout, "start", actor, before)
    return holdout


@transaction.atomic
def holdout_end(*, holdout: Holdout, actor: AbstractBaseUser | None = None) -> Holdout:
    """Stop holding units out: they get experiments and rollouts again at once. The holdout's
    data and its comparison stay; an ended holdout cannot start again."""
    holdout = Holdout.objects.select_for_update().select_related("project").get(pk=holdout.pk)
    if holdout.status != "running":
        raise DomainError(f"The holdout is {holdout.status}: only a running one can end.", "status")
    before = _snapshot(holdout)
    holdout.enabled = False
    holdout.ended_at = timezone.now()
    holdout.save()
    _audit(holdout, "end", actor, before)
    return holdout


@transaction.atomic
def holdout_delete(*, holdout: Holdout, actor: AbstractBaseUser | None = None) -> None:
    """Delete a draft holdout (a started one keeps its record and comparison: end it)."""
    holdout = Holdout.objects.select_for_update().select_related("project").get(pk=holdout.pk)
    if holdout.status != "draft":
        raise DomainError(
            f"The holdout is {holdout.status}: only a draft can be deleted (end it instead).",
            "status",
        )
    _audit(holdout, "delete", actor, _snapshot(holdout))
    holdout.delete()
