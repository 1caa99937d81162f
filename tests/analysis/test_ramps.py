"""Ramp plans: advance after each stage's minimum duration unless a guardrail shows harm."""

from datetime import timedelta

import pytest
from django.utils import timezone

from analysis.models import WebhookDelivery
from analysis.services import analysis_run
from experiments.models import AuditLog, Experiment, ExperimentStatus, Project
from experiments.selectors import ramp_status
from experiments.services import metric_create
from tests.analysis.simulate import simulate
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

STAGES = [
    {"coverage": 0.1, "min_hours": 2},
    {"coverage": 0.5, "min_hours": 24},
    {"coverage": 1.0, "min_hours": 0},
]
CALM = {"purchase": 0.3, "error": 0.5}


@pytest.fixture
def experiment(project, metrics):
    metric_create(
        project=project,
        key="errors",
        name="Checkout errors",
        kind="count",
        event_name="error",
        direction="decrease",
    )
    experiment = running_experiment(
        project,
        ramp_stages=STAGES,
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "errors", "role": "guardrail", "non_inferiority_margin": 0.1},
        ],
    )
    assert experiment.coverage == 0.1
    return experiment


def age_stage(experiment, hours):
    start = timezone.now() - timedelta(hours=hours)
    Experiment.objects.filter(pk=experiment.pk).update(
        ramp_stage_started_at=start, phase_started_at=start - timedelta(hours=1)
    )
    experiment.refresh_from_db()


def traffic(experiment, treatment_rates=CALM, n=300):
    simulate(
        experiment,
        units={"control": n, "treatment": n},
        start=experiment.phase_started_at,
        rates={"control": CALM, "treatment": treatment_rates},
        spacing=timedelta(seconds=1),
    )


def test_the_stage_advances_after_its_minimum_duration(experiment):
    age_stage(experiment, hours=3)
    traffic(experiment)
    snapshot = analysis_run(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.coverage == 0.5 and experiment.ramp_stage_index == 1
    [action] = snapshot.actions
    assert action["action"] == "ramp" and action["from"] == 0.1 and action["to"] == 0.5
    assert "coverage 10% -> 50%" in action["reason"]
    log = AuditLog.objects.get(experiment=experiment, action="experiment.ramp")
    assert log.actor_label == "system"
    assert (log.before["coverage"], log.after["coverage"]) == (0.1, 0.5)
    # The next stage has just begun: a second run right away does not move it again.
    assert analysis_run(experiment_id=experiment.pk).actions == []
    experiment.refresh_from_db()
    assert experiment.coverage == 0.5


def test_nothing_moves_before_the_minimum_duration(experiment):
    age_stage(experiment, hours=1)
    traffic(experiment)
    assert analysis_run(experiment_id=experiment.pk).actions == []
    experiment.refresh_from_db()
    assert experiment.coverage == 0.1


def test_guardrail_harm_rolls_the_ramp_back_without_auto_rollback(experiment):
    assert not experiment.auto_rollback
    age_stage(experiment, hours=1)
    traffic(experiment, {**CALM, "error": 1.5}, n=400)
    snapshot = analysis_run(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.ROLLED_BACK and experiment.coverage == 0.1
    [action] = snapshot.actions
    assert action["action"] == "rollback"
    assert action["reason"].startswith("Ramp plan stopped on guardrail harm: Checkout errors")
    log = AuditLog.objects.get(experiment=experiment, action="experiment.rollback")
    assert log.after["reason"] == action["reason"]


def test_an_unhealthy_experiment_holds_its_stage(experiment):
    age_stage(experiment, hours=3)
    simulate(
        experiment,
        units={"control": 400, "treatment": 200},
        start=experiment.phase_started_at,
        rates={"control": CALM, "treatment": CALM},
        spacing=timedelta(seconds=1),
    )
    snapshot = analysis_run(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.coverage == 0.1 and experiment.status == ExperimentStatus.RUNNING
    [action] = snapshot.actions
    assert action["action"] == "hold" and "Sample ratio mismatch" in action["reason"]


def test_each_step_sends_a_webhook(experiment):
    Project.objects.filter(pk=experiment.project_id).update(webhook_url="http://127.0.0.1:9/h")
    age_stage(experiment, hours=3)
    traffic(experiment)
    analysis_run(experiment_id=experiment.pk)
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "experiment.ramped" and '"to":0.5' in delivery.body


def test_a_stage_never_advances_without_exposures(experiment):
    """The measured defect: a ramp went 10% -> 50% -> 100% in two runs with zero exposures
    ("no harm" is vacuously true without data)."""
    age_stage(experiment, hours=30)
    for _ in range(2):
        snapshot = analysis_run(experiment_id=experiment.pk)
        assert snapshot.look_kind == "collecting" and snapshot.actions == []
    experiment.refresh_from_db()
    assert experiment.coverage == 0.1


def test_a_stage_waits_for_its_minimum_sample_per_arm(experiment):
    stages = [dict(STAGES[0], min_units=500), *STAGES[1:]]
    Experiment.objects.filter(pk=experiment.pk).update(ramp_stages=stages)
    age_stage(experiment, hours=3)
    traffic(experiment, n=300)
    assert analysis_run(experiment_id=experiment.pk).actions == []
    experiment.refresh_from_db()
    assert experiment.coverage == 0.1
    status = ramp_status(experiment, units={"control": 300, "treatment": 300})
    assert status.waiting_for == ("500 units in every arm (300 in the smallest so far)",)
