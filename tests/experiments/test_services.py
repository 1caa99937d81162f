"""Lifecycle and validation rules of experiment definitions."""

import pytest

from config.api import DomainError
from experiments.models import AuditLog, ExperimentStatus
from experiments.services import (
    experiment_conclude,
    experiment_create,
    experiment_pause,
    experiment_ramp,
    experiment_resume,
    experiment_rollback,
    experiment_start,
    experiment_update,
    metric_delete,
)
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


def test_create_rejects_weights_not_summing_to_one(project, metrics):
    payload = experiment_payload(
        variants=[
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.6},
        ]
    )
    with pytest.raises(DomainError, match="sum to 1"):
        experiment_create(project=project, **payload)


def test_create_requires_exactly_one_control(project, metrics):
    payload = experiment_payload(
        variants=[{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]
    )
    with pytest.raises(DomainError, match="Exactly one variant"):
        experiment_create(project=project, **payload)


def test_key_is_unique_per_project(project, metrics):
    experiment_create(project=project, **experiment_payload())
    with pytest.raises(DomainError, match="already exists"):
        experiment_create(project=project, **experiment_payload())


def test_lifecycle_start_pause_resume_ramp_conclude_is_audited(project, metrics):
    experiment = experiment_create(project=project, **experiment_payload(coverage=0.2))
    experiment = experiment_start(experiment=experiment)
    assert experiment.status == ExperimentStatus.RUNNING and experiment.started_at
    experiment = experiment_pause(experiment=experiment)
    experiment = experiment_resume(experiment=experiment)
    experiment = experiment_ramp(experiment=experiment, coverage=0.5)
    assert experiment.coverage == 0.5
    experiment = experiment_conclude(experiment=experiment, decision="treatment")
    assert experiment.status == ExperimentStatus.CONCLUDED
    assert experiment.decision_variant == "treatment"
    actions = set(AuditLog.objects.filter(experiment=experiment).values_list("action", flat=True))
    assert {
        "experiment.create",
        "experiment.start",
        "experiment.pause",
        "experiment.resume",
        "experiment.ramp",
        "experiment.conclude",
    } <= actions


def test_running_experiment_freezes_variants_weights_and_seed(project, metrics):
    experiment = running_experiment(project)
    with pytest.raises(DomainError, match="frozen"):
        experiment_update(
            experiment=experiment,
            variants=[
                {"key": "control", "weight": 0.3, "is_control": True},
                {"key": "treatment", "weight": 0.7},
            ],
        )
    with pytest.raises(DomainError, match="frozen"):
        experiment_update(experiment=experiment, seed="another")


def test_coverage_may_only_go_up_while_running(project, metrics):
    experiment = running_experiment(project, coverage=0.5)
    with pytest.raises(DomainError, match="only go up"):
        experiment_ramp(experiment=experiment, coverage=0.2)


def test_rollback_is_terminal(project, metrics):
    experiment = experiment_rollback(experiment=running_experiment(project))
    assert experiment.status == ExperimentStatus.ROLLED_BACK
    with pytest.raises(DomainError, match="Cannot resume"):
        experiment_resume(experiment=experiment)


def test_metric_in_use_cannot_be_deleted(project, metrics):
    running_experiment(project)
    with pytest.raises(DomainError, match="used by"):
        metric_delete(metric=metrics[0])
