"""Releases: create, start, pause, resume, advance, roll back, complete, fail (writes).

Every move is a ``ReleaseTransition`` (who or what, and why) and a row of the project's audit
log; the flag changes go through ``flags.services.apply_change`` (validated, audited, and seen
by the SDK streams within a second). A release's own rule is a rollout rule appended after the
environment's rules: ``{"id": "release-<id>", "type": "rollout", "weights": {baseline: 1 - p,
new: p}}``. Completing serves the new variation as the environment's default and removes the
rule; rolling back serves the baseline as the default and removes the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.holdouts import served_holdout
from experiments.models import Environment, Project
from experiments.services import audit_log_record
from experiments.services.rules import is_number
from flags.models import Flag
from flags.services.environments import apply_change, config_get

from .models import (
    LIVE_STATUSES,
    Release,
    ReleaseKind,
    ReleaseMetric,
    ReleaseStatus,
    ReleaseTransition,
)
from .notify import release_notify
from .validation import (
    MAX_INTERVAL_SECONDS,
    check_may_release,
    check_metrics,
    check_reachable,
    check_steps,
    check_variations,
)

logger = logging.getLogger(__name__)

MONITOR = "monitor"


def rule_id_for(release: Release) -> str:
    return f"release-{release.pk}"


def _min_interval() -> int:
    return int(settings.ABACUS_RELEASE_MIN_INTERVAL_SECONDS)


# -- transitions --------------------------------------------------------------------------------
# ``transition_*`` move a release its caller has locked and checked (the public services below,
# after the permission and status checks, and the monitor, releases/monitor.py): no check here.


def _record(
    release: Release,
    *,
    before: tuple[str, int],
    actor: AbstractBaseUser | None,
    actor_label: str | None,
    reason: str,
) -> ReleaseTransition:
    label = actor_label or (actor.get_username() if actor is not None else MONITOR)
    transition = ReleaseTransition.objects.create(
        release=release,
        from_status=before[0],
        to_status=release.status,
        from_step=before[1],
        to_step=release.step,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=label,
        reason=reason,
    )
    audit_log_record(
        project=release.project,
        action=f"release.{release.status}",
        target=f"release:{release.pk}",
        actor=actor,
        actor_label=label,
        before={"status": before[0], "step": before[1]},
        after={"status": release.status, "step": release.step, "reason": reason,
               "flag": release.flag.key, "environment": release.environment.key},
    )  # fmt: skip
    return transition


def _rules_without_release(release: Release) -> list[dict[str, Any]]:
    config = config_get(release.flag, release.environment)
    return [r for r in config.rules if r.get("id") != release.rule_id]


def _serve_share(release: Release, percent: float, actor: Any, label: str) -> None:
    """The release's rule at ``percent``% new, the rest baseline (after the environment's rules)."""
    share = round(percent / 100.0, 12)
    weights = {release.baseline_variation: round(1.0 - share, 12), release.variation: share}
    rule = {"id": release.rule_id, "type": "rollout", "weights": weights}
    rules = [*_rules_without_release(release), rule]
    apply_change(release.flag, release.environment, {"rules": rules}, actor, actor_label=label)


def _serve_only(release: Release, variation: str, actor: Any, label: str) -> None:
    """Remove the release's rule and serve ``variation`` as the environment's default."""
    change = {"rules": _rules_without_release(release), "default_variation": variation}
    apply_change(release.flag, release.environment, change, actor, actor_label=label)


def _locked(release: Release) -> Release:
    return (
        Release.objects.select_for_update(of=("self",))
        .select_related("project", "flag", "environment")
        .get(pk=release.pk)
    )


def _require_status(release: Release, allowed: Sequence[str], action: str) -> None:
    if release.status not in allowed:
        raise DomainError(
            f"A {release.get_status_display().lower()} release cannot {action} "
            f"(it can when {' or '.join(allowed)}).",
            "status",
        )


@transaction.atomic
def release_create(
    *,
    project: Project,
    flag: Flag,
    environment: Environment,
    variation: Any,
    baseline_variation: Any = None,
    kind: Any = ReleaseKind.CANARY,
    steps: Any = None,
    metrics: Any = None,
    alpha: Any = 0.05,
    auto_rollback: Any = True,
    analysis_interval_seconds: Any = None,
    start_at: datetime | None = None,
    description: str = "",
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
) -> Release:
    """A release of ``variation`` over the environment's current default (the baseline unless
    given); started at once unless ``start_at`` is in the future. ``actor_label`` names an
    actor that is no person (``key:deploy-bot``, with ``actor`` None) in the transitions."""
    if flag.project_id != project.pk or environment.project_id != project.pk:
        raise DomainError("The flag and the environment must belong to this project.", "flag")
    check_may_release(project, environment, actor)
    if flag.archived:
        raise DomainError(f"Flag '{flag.key}' is archived.", "flag")
    if kind not in ReleaseKind.values:
        raise DomainError(f"kind is {' or '.join(ReleaseKind.values)}.", "kind")
    config = config_get(flag, environment)
    baseline = (
        baseline_variation if baseline_variation not in (None, "") else config.default_variation
    )
    check_variations(flag, variation, baseline)
    checked_steps = check_steps(kind, steps)
    checked_metrics = check_metrics(project, metrics)
    if not is_number(alpha) or not 0.001 <= alpha <= 0.2:
        raise DomainError("alpha is from 0.001 to 0.2 (0.05 is usual).", "alpha")
    if not isinstance(auto_rollback, bool):
        raise DomainError("auto_rollback is true or false.", "auto_rollback")
    interval = analysis_interval_seconds
    if interval is None:
        interval = max(60, _min_interval())
    if not is_number(interval) or interval != int(interval):
        raise DomainError(
            "analysis_interval_seconds is a whole number.", "analysis_interval_seconds"
        )
    if not _min_interval() <= interval <= MAX_INTERVAL_SECONDS:
        raise DomainError(
            f"analysis_interval_seconds is from {_min_interval()} to {MAX_INTERVAL_SECONDS}.",
            "analysis_interval_seconds",
        )
    if not isinstance(description, str) or len(description) > 5000:
        raise DomainError("The description is text of at most 5000 characters.", "description")
    if not config.enabled:
        raise DomainError(
            f"Flag '{flag.key}' is off in {environment.key}: everyone gets its off variation, "
            "so a release would change nothing. Turn it on (serving the baseline) first.",
            "environment",
        )
    if Release.objects.filter(
        flag=flag, environment=environment, status__in=LIVE_STATUSES
    ).exists():
        raise DomainError(
            f"Flag '{flag.key}' already has a release in {environment.key}: finish or roll it "
            "back first.",
            "flag",
        )
    check_reachable(config.rules, environment)
    now = timezone.now()
    release = Release(
        project=project, flag=flag, environment=environment, kind=kind, variation=variation,
        baseline_variation=baseline, steps=checked_steps, alpha=float(alpha),
        auto_rollback=auto_rollback, analysis_interval_seconds=int(interval),
        start_at=start_at, description=description,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )  # fmt: skip
    release.full_clean(exclude=["rule_id"])
    try:
        with transaction.atomic():
            release.save()
    except IntegrityError as exc:
        raise DomainError(
            f"Flag '{flag.key}' already has a release in {environment.key}.", "flag"
        ) from exc
    release.rule_id = rule_id_for(release)
    release.save(update_fields=["rule_id"])
    ReleaseMetric.objects.bulk_create(
        ReleaseMetric(
            release=release, metric=m, role=role, non_inferiority_margin=margin, position=i
        )
        for i, (m, role, margin) in enumerate(checked_metrics)
    )
    _record(release, before=("", 0), actor=actor, actor_label=actor_label, reason="created")
    if start_at is None or start_at <= now:
        return transition_start(release, actor, actor_label, now)
    return release


def transition_start(release: Release, actor: Any, label: str | None, now: datetime) -> Release:
    config = config_get(release.flag, release.environment)
    if not config.enabled:
        off = f"Flag '{release.flag.key}' is off in {release.environment.key}."
        return transition_fail(release, off)
    before = (release.status, release.step)
    release.status = ReleaseStatus.RUNNING
    release.step = 0
    release.started_at = release.step_started_at = now
    release.next_analysis_at = now + timedelta(seconds=release.analysis_interval_seconds)
    release.decision = {"action": "hold", "reasons": ["Started: collecting the first step's data."],
                        "waits_for": [], "at": now.isoformat()}  # fmt: skip
    _serve_share(release, release.steps[0]["percent"], actor, label or MONITOR)
    release.save()
    _record(release, before=before, actor=actor, actor_label=label,
            reason=f"started at {release.steps[0]['percent']:g}%")  # fmt: skip
    release_notify(release, "release.started", f"Started at {release.steps[0]['percent']:g}%.")
    return release


@transaction.atomic
def release_start(
    *, release: Release, actor: AbstractBaseUser | None = None, actor_label: str | None = None
) -> Release:
    """Start a scheduled release now (the beat does it at ``start_at``)."""
    release = _locked(release)
    if actor is not None:
        check_may_release(release.project, release.environment, actor)
    _require_status(release, [ReleaseStatus.SCHEDULED], "start")
    return transition_start(release, actor, actor_label, timezone.now())


@transaction.atomic
def release_pause(
    *,
    release: Release,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    actor_label: str | None = None,
) -> Release:
    """Steps stop advancing; the monitor still rolls back on harm."""
    return _move(
        release, "pause", ReleaseStatus.RUNNING, ReleaseStatus.PAUSED, actor, actor_label,
        reason or "paused", "release.paused", reason or "Paused: steps do not advance.",
    )  # fmt: skip


@transaction.atomic
def release_resume(
    *,
    release: Release,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    actor_label: str | None = None,
) -> Release:
    """Steps advance again; the next analysis is due at once."""
    return _move(
        release, "resume", ReleaseStatus.PAUSED, ReleaseStatus.RUNNING, actor, actor_label,
        reason or "resumed", "release.resumed", reason or "Resumed.",
    )  # fmt: skip


def _move(
    release: Release,
    action: str,
    source: str,
    target: str,
    actor: AbstractBaseUser | None,
    actor_label: str | None,
    reason: str,
    event: str,
    message: str,
) -> Release:
    """A status move between running and paused, checked, audited and notified."""
    release = _locked(release)
    check_may_release(release.project, release.environment, actor)
    _require_status(release, [source], action)
    before = (release.status, release.step)
    release.status = target
    fields = ["status"]
    if target == ReleaseStatus.RUNNING:
        release.next_analysis_at = timezone.now()
        fields.append("next_analysis_at")
    release.save(update_fields=fields)
    _record(release, before=before, actor=actor, actor_label=actor_label, reason=reason)
    release_notify(release, event, message)
    return release


def transition_advance(
    release: Release, actor: Any, label: str | None, reason: str, now: datetime
) -> Release:
    if release.step + 1 >= len(release.steps):
        return transition_complete(release, actor, label, reason, now)
    before = (release.status, release.step)
    release.step += 1
    release.step_started_at = now
    release.next_analysis_at = now + timedelta(seconds=release.analysis_interval_seconds)
    percent = release.steps[release.step]["percent"]
    _serve_share(release, percent, actor, label or MONITOR)
    release.save()
    _record(release, before=before, actor=actor, actor_label=label, reason=reason)
    release_notify(release, "release.step_advanced", f"Now at {percent:g}%. {reason}")
    return release


def _finish(
    release: Release,
    served: str,
    status: str,
    event: str,
    actor: Any,
    label: str | None,
    reason: str,
    now: datetime,
    keep_rule: bool = False,
) -> Release:
    """Serve one variation to everyone (the rule removed, it the default; with ``keep_rule``,
    the rule at 100% of it) and end the release."""
    before = (release.status, release.step)
    if keep_rule:
        _serve_share(release, 100.0, actor, label or MONITOR)
    else:
        _serve_only(release, served, actor, label or MONITOR)
    release.status = status
    release.finished_at = now
    release.next_analysis_at = None
    release.save()
    _record(release, before=before, actor=actor, actor_label=label, reason=reason)
    release_notify(release, event, reason)
    return release


def transition_complete(
    release: Release, actor: Any, label: str | None, reason: str, now: datetime
) -> Release:
    if release.environment.production and served_holdout(release.project_id) is not None:
        # The new variation as the default would reach the holdout's units too: the rule stays,
        # at 100%, and they keep the baseline (docs/flags.md "Holdout").
        return _finish(release, release.variation, ReleaseStatus.COMPLETED, "release.completed",
                       actor, label, reason, now, keep_rule=True)  # fmt: skip
    return _finish(release, release.variation, ReleaseStatus.COMPLETED, "release.completed",
                   actor, label, reason, now)  # fmt: skip


def transition_rollback(
    release: Release, actor: Any, label: str | None, reason: str, now: datetime
) -> Release:
    return _finish(release, release.baseline_variation, ReleaseStatus.ROLLED_BACK,
                   "release.rolled_back", actor, label, reason, now)  # fmt: skip


def transition_fail(release: Release, reason: str) -> Release:
    """The release cannot go on (its flag or rule changed under it): stop, leave the flag as
    people left it."""
    before = (release.status, release.step)
    release.status = ReleaseStatus.FAILED
    release.finished_at = timezone.now()
    release.next_analysis_at = None
    release.decision = {**(release.decision or {}), "action": "failed", "reasons": [reason]}
    release.save()
    _record(release, before=before, actor=None, actor_label=MONITOR, reason=reason)
    release_notify(release, "release.failed", reason)
    return release


@transaction.atomic
def release_advance(
    *,
    release: Release,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    actor_label: str | None = None,
) -> Release:
    """A person moves the release to its next step (or completes it) without waiting."""
    release = _locked(release)
    check_may_release(release.project, release.environment, actor)
    _require_status(release, [ReleaseStatus.RUNNING, ReleaseStatus.PAUSED], "advance")
    reason = reason or "advanced by hand"
    return transition_advance(release, actor, actor_label, reason, timezone.now())


@transaction.atomic
def release_rollback(
    *,
    release: Release,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    actor_label: str | None = None,
) -> Release:
    release = _locked(release)
    check_may_release(release.project, release.environment, actor)
    _require_status(release, LIVE_STATUSES, "roll back")
    if release.status == ReleaseStatus.SCHEDULED:
        before = (release.status, release.step)
        release.status = ReleaseStatus.ROLLED_BACK
        release.finished_at = timezone.now()
        release.save()
        _record(
            release, before=before, actor=actor, actor_label=actor_label,
            reason=reason or "cancelled",
        )  # fmt: skip
        return release
    reason = reason or "rolled back by hand"
    return transition_rollback(release, actor, actor_label, reason, timezone.now())
