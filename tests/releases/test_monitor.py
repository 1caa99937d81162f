"""The monitor on real tables: a harmful release is rolled back and the flag serves the
baseline; a harmless one advances step by step and completes; holds say what they wait for;
a rule edited by hand fails the release."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from bucketing.flags import evaluate_flag
from flags.models import FlagEnvironment
from flags.selectors import environment_flags
from flags.services import flag_environment_update
from releases.models import ReleaseCheck, ReleaseStatus, ReleaseTransition
from releases.monitor import release_analyze, releases_tick
from releases.services import release_create

from .conftest import simulate

pytestmark = pytest.mark.django_db

STEPS = [
    {"percent": 10, "min_minutes": 0, "min_units": 200},
    {"percent": 50, "min_minutes": 0, "min_units": 200},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]


def _metrics(health_metrics):
    return [{"metric": "error-rate"}, {"metric": "latency-p95"}, {"metric": "purchase"}]


def _release(project, flag, production, admin_user, health_metrics, **kw):
    return release_create(
        project=project, flag=flag, environment=production, variation="on",
        steps=kw.pop("steps", STEPS), metrics=_metrics(health_metrics), actor=admin_user, **kw,
    )  # fmt: skip


def _served(production, flag_key: str, unit: str) -> str:
    specs = environment_flags(production).specs
    return evaluate_flag(specs[flag_key], {"id": unit}, specs).variation


def test_release_installs_its_rule_after_the_environments_rules(
    project, flag, production, admin_user, health_metrics
):
    release = _release(project, flag, production, admin_user, health_metrics)
    assert release.status == ReleaseStatus.RUNNING and release.baseline_variation == "off"
    config = FlagEnvironment.objects.get(flag=flag, environment=production)
    assert config.rules[-1] == {
        "id": f"release-{release.pk}", "type": "rollout", "hash_attribute": "id",
        "weights": {"on": 0.1, "off": 0.9},
    }  # fmt: skip
    served = [_served(production, flag.key, f"x{i}") for i in range(2000)]
    assert 0.07 < served.count("on") / 2000 < 0.13


def test_a_harmful_release_is_rolled_back_and_serves_the_baseline(
    project, flag, production, admin_user, health_metrics
):
    release = _release(project, flag, production, admin_user, health_metrics)
    rng = np.random.default_rng(1)
    at = release.step_started_at + timedelta(seconds=5)
    simulate(project=project, environment=production, flag=flag, at=at, units=4000,
             share_new=0.1, rng=rng, error_rate={"on": 0.5, "off": 0.05})  # fmt: skip
    check = release_analyze(release.pk, through=at + timedelta(minutes=1))
    assert check.action == "rollback", check.reasons
    assert any("Errors per request" in r for r in check.reasons)
    release.refresh_from_db()
    assert release.status == ReleaseStatus.ROLLED_BACK
    config = FlagEnvironment.objects.get(flag=flag, environment=production)
    assert config.default_variation == "off" and not config.rules
    assert {_served(production, flag.key, f"u{i}") for i in range(500)} == {"off"}
    last = ReleaseTransition.objects.filter(release=release).last()
    assert last.actor_label == "monitor" and "Errors per request" in last.reason


def test_a_harmless_release_completes_every_step(
    project, flag, production, admin_user, health_metrics
):
    release = _release(project, flag, production, admin_user, health_metrics)
    rng = np.random.default_rng(2)
    for step, share in enumerate([0.1, 0.5, 1.0]):
        release.refresh_from_db()
        assert release.step == step and release.status == ReleaseStatus.RUNNING
        at = release.step_started_at + timedelta(seconds=5)
        if step == 2:  # the 100% step compares with the window before it: baseline units there
            simulate(project=project, environment=production, flag=flag,
                     at=release.step_started_at - timedelta(seconds=30), units=1500,
                     share_new=0.0, rng=rng, prefix=f"pre{step}-")  # fmt: skip
        simulate(project=project, environment=production, flag=flag, at=at, units=3000,
                 share_new=share, rng=rng, prefix=f"s{step}-")  # fmt: skip
        through = at + timedelta(minutes=1)
        check = release_analyze(release.pk, through=through, now=through)
        assert check.action in ("advance", "complete"), (check.reasons, check.waits_for)
    release.refresh_from_db()
    assert release.status == ReleaseStatus.COMPLETED
    config = FlagEnvironment.objects.get(flag=flag, environment=production)
    assert config.default_variation == "on" and not config.rules
    assert [t.to_status for t in release.transitions.all()] == [
        "scheduled",
        "running",
        "running",
        "running",
        "completed",
    ]


def test_not_enough_data_holds_and_says_what_it_waits_for(
    project, flag, production, admin_user, health_metrics
):
    steps = [{"percent": 10, "min_minutes": 30, "min_units": 500}, {"percent": 100}]
    release = _release(project, flag, production, admin_user, health_metrics, steps=steps)
    rng = np.random.default_rng(3)
    at = release.step_started_at + timedelta(seconds=5)
    simulate(project=project, environment=production, flag=flag, at=at, units=300,
             share_new=0.1, rng=rng)  # fmt: skip
    check = release_analyze(release.pk, through=at + timedelta(minutes=1))
    assert check.action == "hold"
    text = " ".join(check.waits_for)
    assert "more minutes" in text and "more units on the new variation" in text
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING and release.step == 0
    assert release.decision["action"] == "hold" and release.decision["waits_for"]


def test_a_rule_removed_by_hand_fails_the_release(
    project, flag, production, admin_user, health_metrics
):
    release = _release(project, flag, production, admin_user, health_metrics)
    flag_environment_update(flag=flag, environment=production, actor=admin_user, rules=[])
    assert release_analyze(release.pk) is None
    release.refresh_from_db()
    assert release.status == ReleaseStatus.FAILED
    assert "removed" in release.decision["reasons"][0]


def test_tick_starts_scheduled_releases_and_picks_due_analyses(
    project, flag, production, admin_user, health_metrics
):
    start = timezone.now() + timedelta(minutes=5)
    release = _release(project, flag, production, admin_user, health_metrics, start_at=start)
    assert release.status == ReleaseStatus.SCHEDULED
    assert releases_tick(timezone.now()) == []
    due = releases_tick(start + timedelta(seconds=1))
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING
    assert due == [] and release.next_analysis_at > start
    assert releases_tick(release.next_analysis_at) == [release.pk]
    assert releases_tick(release.next_analysis_at) == []  # pushed one cadence ahead
    assert ReleaseCheck.objects.count() == 0


def test_units_served_the_new_variation_keep_it_as_the_share_grows(
    project, flag, production, admin_user, health_metrics
):
    from releases.services import release_advance

    release = _release(project, flag, production, admin_user, health_metrics)
    units = [f"k{i}" for i in range(3000)]
    before = {u for u in units if _served(production, flag.key, u) == "on"}
    release_advance(release=release, actor=admin_user)
    after = {u for u in units if _served(production, flag.key, u) == "on"}
    assert before < after
    assert 0.45 < len(after) / len(units) < 0.55


def test_a_rule_serving_everyone_first_is_refused(project, flag, production, admin_user):
    from core.errors import DomainError

    flag_environment_update(
        flag=flag, environment=production, actor=admin_user,
        rules=[{"type": "rollout", "weights": {"on": 0.2, "off": 0.8}}],
    )  # fmt: skip
    with pytest.raises(DomainError, match="serves every unit") as err:
        release_create(
            project=project, flag=flag, environment=production, variation="on", actor=admin_user
        )
    assert err.value.field == "environment"
