"""Scheduled changes: validated when created, applied by `scheduled_changes_apply` once due
(not before), failed with the reason when they no longer fit, audited as "schedule"; the beat
task calls the same service."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from core.errors import DomainError
from experiments.models import AuditLog
from flags.models import FlagEnvironment, ScheduledChangeStatus
from flags.services import (
    flag_environment_update,
    rollout_move,
    scheduled_change_cancel,
    scheduled_change_create,
    scheduled_changes_apply,
)
from flags.tasks import apply_scheduled_changes

pytestmark = pytest.mark.django_db


def config(flag, env):
    return FlagEnvironment.objects.get(flag=flag, environment=env)


def test_turn_on_at_a_time(flag, envs, editor):
    now = timezone.now()
    at = now + timedelta(hours=1)
    scheduled = scheduled_change_create(
        flag=flag, environment=envs["staging"], at=at, change={"enabled": True}, actor=editor
    )
    assert scheduled_changes_apply(now=now) == 0
    assert not config(flag, envs["staging"]).enabled
    assert scheduled_changes_apply(now=at) == 1
    scheduled.refresh_from_db()
    assert scheduled.status == ScheduledChangeStatus.APPLIED and scheduled.applied_at == at
    assert config(flag, envs["staging"]).enabled
    log = AuditLog.objects.filter(action="flag.update").first()
    assert log.actor_label == "schedule" and log.after["enabled"] is True
    assert scheduled_changes_apply(now=at + timedelta(hours=1)) == 0  # applied once


def test_move_a_rollout_to_a_percent(flag, envs):
    staging = envs["staging"]
    flag_environment_update(
        flag=flag,
        environment=staging,
        enabled=True,
        rules=[{"id": "ramp", "type": "rollout", "weights": {"on": 0.1, "off": 0.9}}],
    )
    now = timezone.now()
    scheduled_change_create(
        flag=flag,
        environment=staging,
        at=now,
        change={"rule": "ramp", "variation": "on", "percent": 50},
    )
    assert scheduled_changes_apply(now=now) == 1
    assert config(flag, staging).rules[0]["weights"] == {"on": 0.5, "off": 0.5}


def test_rollout_move_scales_the_others_proportionally():
    keys = ["a", "b", "c"]
    moved = rollout_move({"a": 0.2, "b": 0.6, "c": 0.2}, keys, "a", 60)
    assert moved == pytest.approx({"a": 0.6, "b": 0.3, "c": 0.1})
    assert moved["a"] == 0.6 and sum(moved.values()) == pytest.approx(1, abs=1e-12)
    assert rollout_move({"a": 1.0}, keys, "a", 40) == pytest.approx({"a": 0.4, "b": 0.3, "c": 0.3})
    assert rollout_move({"a": 0.5, "b": 0.5}, keys, "c", 100)["c"] == 1.0


def test_a_change_that_no_longer_fits_fails_with_the_reason(flag, envs):
    staging = envs["staging"]
    flag_environment_update(
        flag=flag,
        environment=staging,
        rules=[{"id": "ramp", "type": "rollout", "weights": {"on": 0.1, "off": 0.9}}],
    )
    now = timezone.now()
    scheduled = scheduled_change_create(
        flag=flag,
        environment=staging,
        at=now,
        change={"rule": "ramp", "variation": "on", "percent": 20},
    )
    flag_environment_update(flag=flag, environment=staging, rules=[])
    assert scheduled_changes_apply(now=now) == 0
    scheduled.refresh_from_db()
    assert scheduled.status == ScheduledChangeStatus.FAILED and "ramp" in scheduled.note
    assert AuditLog.objects.filter(action="flag.schedule.failed").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"enabled": "yes"}, "change.enabled"),
        ({"colour": "red"}, "change"),
        ({"rule": "nope", "variation": "on", "percent": 10}, "change.rule"),
        ({"rule": "ramp", "variation": "maybe", "percent": 10}, "change.variation"),
        ({"rule": "ramp", "variation": "on", "percent": 101}, "change.percent"),
        ({"rule": "pin", "variation": "on", "percent": 10}, "change.rule"),  # not a rollout
    ],
)
def test_bad_changes_are_refused_naming_the_field(flag, envs, change, field):
    flag_environment_update(
        flag=flag,
        environment=envs["staging"],
        rules=[
            {"id": "pin", "type": "force", "variation": "on", "condition": {"staff": True}},
            {"id": "ramp", "type": "rollout", "weights": {"on": 0.1, "off": 0.9}},
        ],
    )
    with pytest.raises(DomainError) as exc:
        scheduled_change_create(
            flag=flag, environment=envs["staging"], at=timezone.now(), change=change
        )
    assert exc.value.field == field


def test_production_schedules_need_an_admin_and_respect_approval(
    project, flag, envs, editor, admin_user
):
    at = timezone.now() + timedelta(days=1)
    with pytest.raises(PermissionDenied):
        scheduled_change_create(
            flag=flag, environment=envs["production"], at=at, change={"enabled": True}, actor=editor
        )
    scheduled = scheduled_change_create(
        flag=flag, environment=envs["production"], at=at, change={"enabled": True}, actor=admin_user
    )
    with pytest.raises(PermissionDenied):
        scheduled_change_cancel(scheduled_change=scheduled, actor=editor)
    assert (
        scheduled_change_cancel(scheduled_change=scheduled, actor=admin_user).status == "cancelled"
    )
    assert scheduled_changes_apply(now=at) == 0  # cancelled: never applied
    project.require_approval = True
    project.save()
    with pytest.raises(DomainError):
        scheduled_change_create(
            flag=flag,
            environment=envs["production"],
            at=at,
            change={"enabled": True},
            actor=admin_user,
        )
    scheduled_change_create(  # a scheduled kill switch is fine
        flag=flag,
        environment=envs["production"],
        at=at,
        change={"enabled": False},
        actor=admin_user,
    )


def test_the_beat_task_applies_due_changes(flag, envs):
    scheduled_change_create(
        flag=flag,
        environment=envs["development"],
        at=timezone.now() - timedelta(seconds=1),
        change={"enabled": True},
    )
    assert apply_scheduled_changes() == 1
    assert config(flag, envs["development"]).enabled
