"""Scheduled changes: turn a flag on or off, or move a rollout to N%, at a given time; the
beat applies the due ones (`scheduled_changes_apply`, audited as actor "schedule")."""

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.models import Environment
from experiments.services import audit_log_record
from experiments.services.audit import _user
from flags.models import Flag, ScheduledChange, ScheduledChangeStatus
from flags.services.access import is_admin, require
from flags.services.environments import KILL_SWITCH, apply_change, config_get
from flags.services.rules import check_variation_key, is_number

logger = logging.getLogger(__name__)
SCHEDULE_ACTOR = "schedule"
MAX_PENDING_PER_FLAG = 100


def rollout_move(
    weights: Mapping[str, float], keys: Sequence[str], variation: str, percent: float
) -> dict[str, float]:
    """The rollout with ``variation`` at ``percent``/100; the other variations share the rest
    in proportion to their shares before (evenly when they had none), summing to 1."""
    share = percent / 100.0
    others = [k for k in keys if k != variation]
    rest_before = sum(float(weights.get(k, 0.0)) for k in others)
    if rest_before > 0:
        moved = {k: float(weights.get(k, 0.0)) * (1 - share) / rest_before for k in others}
    else:
        moved = {k: (1 - share) / len(others) for k in others}
    moved[variation] = share
    result = {k: moved[k] for k in keys if moved.get(k, 0.0) > 0 or k in weights or k == variation}
    # Shares are rounded to 12 places; the largest other share absorbs the rounding, so the
    # moved variation gets exactly percent / 100 and the sum is 1 well within the tolerance.
    result = {k: round(v, 12) for k, v in result.items()}
    rest = [k for k in result if k != variation]
    if rest:
        largest = max(rest, key=lambda k: result[k])
        result[largest] = round(result[largest] + 1.0 - sum(result.values()), 12)
    return result


def check_scheduled(flag: Flag, environment: Environment, change: Any) -> dict[str, Any]:
    if not isinstance(change, Mapping):
        raise DomainError(
            'A scheduled change is {"enabled": true|false} or {"rule": "<rule id>", '
            '"variation": "<key>", "percent": 0-100}.',
            "change",
        )
    if set(change) == {"enabled"}:
        if not isinstance(change["enabled"], bool):
            raise DomainError("'enabled' is true or false.", "change.enabled")
        return {"enabled": change["enabled"]}
    if set(change) != {"rule", "variation", "percent"}:
        raise DomainError(
            'A scheduled change is {"enabled": ...} or {"rule", "variation", "percent"}.',
            "change",
        )
    config = config_get(flag, environment)
    rule = next((r for r in config.rules or [] if r.get("id") == change["rule"]), None)
    if rule is None or rule.get("type") != "rollout":
        raise DomainError(
            f"No rollout rule {change['rule']!r} in {environment.key}.", "change.rule"
        )
    keys = [v["key"] for v in flag.variations]
    check_variation_key(keys, change["variation"], "change.variation", "The variation")
    percent = change["percent"]
    if not is_number(percent) or not 0 <= percent <= 100:
        raise DomainError("The percent is a number from 0 to 100.", "change.percent")
    return {"rule": change["rule"], "variation": change["variation"], "percent": float(percent)}


def _check_may_schedule(flag: Flag, environment: Environment, actor: Any, change: dict) -> None:
    require(flag.project, actor, "edit")
    if not environment.production:
        return
    if not is_admin(flag.project, actor):
        raise PermissionDenied(
            f"Changes to {environment.key} need an admin of '{flag.project.slug}'."
        )
    if flag.project.require_approval and change != KILL_SWITCH:
        raise DomainError(
            "This project requires approval of production changes: only turning the flag off "
            "can be scheduled there.",
            "change",
        )


@transaction.atomic
def scheduled_change_create(
    *,
    flag: Flag,
    environment: Environment,
    at: datetime,
    change: dict[str, Any],
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> ScheduledChange:
    if environment.project_id != flag.project_id:
        raise DomainError("The environment belongs to another project.", "environment")
    if not isinstance(at, datetime) or timezone.is_naive(at):
        raise DomainError("Give the time with its time zone (ISO 8601, e.g. ...Z).", "at")
    change = check_scheduled(flag, environment, change)
    _check_may_schedule(flag, environment, actor, change)
    pending = ScheduledChange.objects.filter(flag=flag, status=ScheduledChangeStatus.PENDING)
    if pending.count() >= MAX_PENDING_PER_FLAG:
        raise DomainError(f"A flag has at most {MAX_PENDING_PER_FLAG} pending changes.", "at")
    scheduled = ScheduledChange.objects.create(
        flag=flag,
        environment=environment,
        at=at,
        change=change,
        note=note or "",
        created_by=_user(actor),
    )
    audit_log_record(
        project=flag.project,
        action="flag.schedule",
        target=f"flag:{flag.key}",
        actor=actor,
        after={
            "id": scheduled.pk,
            "environment": environment.key,
            "at": at.isoformat(),
            "change": change,
        },
    )
    return scheduled


@transaction.atomic
def scheduled_change_cancel(
    *, scheduled_change: ScheduledChange, actor: AbstractBaseUser | None = None
) -> ScheduledChange:
    scheduled = (
        ScheduledChange.objects.select_for_update()
        .select_related("flag__project", "environment")
        .get(pk=scheduled_change.pk)
    )
    require(scheduled.flag.project, actor, "edit")
    if scheduled.environment.production and not is_admin(scheduled.flag.project, actor):
        raise PermissionDenied("Changes to production need an admin.")
    if scheduled.status != ScheduledChangeStatus.PENDING:
        raise DomainError(f"This scheduled change is already {scheduled.status}.", "status")
    scheduled.status = ScheduledChangeStatus.CANCELLED
    scheduled.save(update_fields=["status"])
    audit_log_record(
        project=scheduled.flag.project,
        action="flag.schedule.cancel",
        target=f"flag:{scheduled.flag.key}",
        actor=actor,
        before={"id": scheduled.pk, "change": scheduled.change, "at": scheduled.at.isoformat()},
    )
    return scheduled


def _as_config_change(flag: Flag, environment: Environment, change: dict) -> dict[str, Any]:
    change = check_scheduled(flag, environment, change)
    if "enabled" in change:
        return change
    config = config_get(flag, environment)
    keys = [v["key"] for v in flag.variations]
    rules = []
    for rule in config.rules:
        if rule.get("id") == change["rule"]:
            weights = rollout_move(rule["weights"], keys, change["variation"], change["percent"])
            rule = {**rule, "weights": weights}
        rules.append(rule)
    return {"rules": rules}


def _apply_one(scheduled: ScheduledChange, now: datetime) -> bool:
    flag, environment = scheduled.flag, scheduled.environment
    try:
        with transaction.atomic():
            change = _as_config_change(flag, environment, scheduled.change)
            apply_change(flag, environment, change, None, actor_label=SCHEDULE_ACTOR)
    except DomainError as exc:
        scheduled.status = ScheduledChangeStatus.FAILED
        scheduled.note = (scheduled.note + "\n" if scheduled.note else "") + exc.message
        logger.warning("scheduled change %s of flag %s failed: %s", scheduled.pk, flag.key, exc)
        audit_log_record(
            project=flag.project,
            action="flag.schedule.failed",
            target=f"flag:{flag.key}",
            actor_label=SCHEDULE_ACTOR,
            after={"id": scheduled.pk, "change": scheduled.change, "reason": exc.message},
        )
    else:
        scheduled.status = ScheduledChangeStatus.APPLIED
    scheduled.applied_at = now
    scheduled.save(update_fields=["status", "note", "applied_at"])
    return scheduled.status == ScheduledChangeStatus.APPLIED


def scheduled_changes_apply(now: datetime | None = None) -> int:
    """Apply every pending change due at ``now``, oldest first; a change that no longer fits
    (its rule was removed, ...) is marked failed with the reason. Returns how many applied.
    Two workers never apply the same change: rows are locked, and skipped when locked."""
    now = now or timezone.now()
    applied = 0
    with transaction.atomic():
        due = ScheduledChange.objects.filter(
            status=ScheduledChangeStatus.PENDING, at__lte=now
        ).select_related("flag__project", "environment")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        for scheduled in due.order_by("at", "id"):
            applied += _apply_one(scheduled, now)
    return applied
