"""Reads for the pages: the audit trail's field-by-field changes, ramp status, usage, planning."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import Experiment
from experiments.power_plans import power_plan
from experiments.selectors import (
    _changes,
    audit_log_for_experiment,
    experiments_search,
    metrics_with_usage,
    ramp_status,
)
from experiments.services import experiment_create, experiment_update
from stats import power_sample_size
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def test_changes_lists_only_differing_fields():
    changes = _changes({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4})
    assert [(c.field, c.before, c.after) for c in changes] == [
        ("b", 2, 5),
        ("c", 3, None),
        ("d", None, 4),
    ]
    assert changes[1].after_text == "—"
    assert [(c.field, c.after_text) for c in _changes(None, {"role": "editor"})] == [
        ("role", "editor")
    ]


def test_audit_for_an_update_shows_before_and_after(project, metrics, admin_user):
    experiment = experiment_create(project=project, **experiment_payload())
    experiment_update(experiment=experiment, actor=admin_user, hypothesis="New idea")
    entry = audit_log_for_experiment(experiment)[0]
    assert entry.log.action == "experiment.update" and entry.log.actor_label == "alice"
    assert [(c.field, c.before_text, c.after_text) for c in entry.changes] == [
        ("hypothesis", "A shorter checkout converts better.", "New idea")
    ]


def test_ramp_status_says_when_the_next_stage_may_start(project, metrics):
    stages = [{"coverage": 0.1, "min_hours": 12}, {"coverage": 0.5, "min_hours": 12}]
    experiment = running_experiment(project, ramp_stages=stages)
    status = ramp_status(experiment)
    assert status.next_coverage == 0.5 and not status.can_advance
    assert status.due_at == experiment.ramp_stage_started_at + timedelta(hours=12)
    assert ramp_status(experiment, now=timezone.now() + timedelta(hours=13)).can_advance
    assert ramp_status(Experiment(ramp_stages=[])) is None


def test_search_and_usage(project, metrics):
    running_experiment(project, "live-one")
    experiment_create(project=project, **experiment_payload("draft-one", name="Pricing"))
    assert [e.key for e in experiments_search(project, q="pric")] == ["draft-one"]
    usage = {u.metric.key: u for u in metrics_with_usage(project)}
    assert usage["purchase"].experiments == ["draft-one", "live-one"]
    assert usage["purchase"].live == ["live-one"] and usage["revenue"].experiments == []


def test_power_plan_matches_the_stats_package_and_adds_duration():
    plan = power_plan(
        kind="binomial",
        baseline=0.1,
        mde=0.05,
        alpha=0.05,
        method="group_sequential",
        daily_units=10_000,
        coverage=0.5,
    )
    reference = power_sample_size(
        mde=0.05, baseline_mean=0.1, kind="binomial", alpha=0.05, design="group_sequential"
    )
    assert plan.per_arm == reference.per_arm and plan.total == 2 * reference.per_arm
    assert plan.days == pytest.approx(plan.total / 5_000)
    assert plan.fixed_total < plan.total


def test_power_plan_inverts_a_sample_size():
    plan = power_plan(
        kind="mean",
        baseline=20.0,
        variance=400.0,
        sample_size=50_000,
        alpha=0.05,
        method="fixed",
    )
    back = power_plan(
        kind="mean", baseline=20.0, variance=400.0, mde=plan.mde, alpha=0.05, method="fixed"
    )
    assert back.total == pytest.approx(50_000, rel=1e-3)
