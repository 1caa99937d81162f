"""Scheduled changes, seen by a real GrowthBook SDK: after the beat applies a schedule (turn on,
move a rollout), the environment's payload makes the `growthbook` SDK serve every unit what
`POST /evaluate`'s decision serves, the rollout's share moves to the scheduled percentage, and
no unit in the rollout's variation leaves it as the share grows."""

from datetime import timedelta

import pytest
from django.utils import timezone
from growthbook import GrowthBook

from assignments.selectors import features_payload_for
from bucketing.flags import evaluate_flags
from flags.selectors import environment_flags
from flags.services import (
    flag_environment_update,
    scheduled_change_create,
    scheduled_changes_apply,
)

pytestmark = pytest.mark.django_db
UNITS = [f"unit-{i}" for i in range(4000)]


def served(environment, key: str) -> list:
    """Every unit's value from the SDK on the payload, checked equal to the server's."""
    payload, _ = features_payload_for(environment)
    specs = environment_flags(environment).specs
    values = []
    for unit in UNITS:
        attributes = {"id": unit}
        sdk = GrowthBook(features=payload["features"], attributes=attributes)
        value = sdk.eval_feature(key).value
        assert value == evaluate_flags(specs, attributes, [key])[key].value, unit
        values.append(value)
    return values


def test_scheduled_turn_on_and_rollout_move_agree_with_the_sdk(flag, envs, admin_user):
    staging = envs["staging"]
    flag_environment_update(
        flag=flag,
        environment=staging,
        actor=admin_user,
        default_variation="off",
        rules=[{"id": "ramp", "type": "rollout", "weights": {"on": 0.1, "off": 0.9}}],
    )
    assert not any(served(staging, flag.key))  # off: the off variation for everyone
    now = timezone.now()
    scheduled_change_create(
        flag=flag, environment=staging, at=now, change={"enabled": True}, actor=admin_user
    )
    scheduled_change_create(
        flag=flag,
        environment=staging,
        at=now + timedelta(hours=1),
        change={"rule": "ramp", "variation": "on", "percent": 50},
        actor=admin_user,
    )
    assert scheduled_changes_apply(now=now) == 1
    at_10 = served(staging, flag.key)
    assert 0.08 < sum(at_10) / len(UNITS) < 0.12
    assert scheduled_changes_apply(now=now + timedelta(hours=1)) == 1
    at_50 = served(staging, flag.key)
    assert 0.47 < sum(at_50) / len(UNITS) < 0.53
    assert all(later for earlier, later in zip(at_10, at_50, strict=True) if earlier)
    assert not any(served(envs["production"], flag.key))  # other environments untouched
