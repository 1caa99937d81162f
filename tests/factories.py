"""Builders for test data that go through the services, like real users do."""

from typing import Any

from experiments.models import Experiment, Project
from experiments.services import experiment_create, experiment_start


def experiment_payload(key: str = "checkout-v2", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "key": key,
        "name": "Checkout v2",
        "hypothesis": "A shorter checkout converts better.",
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True, "value": {"v": 1}},
            {"key": "treatment", "weight": 0.5, "value": {"v": 2}},
        ],
        "metrics": [{"metric": "purchase", "role": "primary"}],
    }
    payload.update(overrides)
    return payload


def running_experiment(project: Project, key: str = "checkout-v2", **overrides: Any) -> Experiment:
    experiment = experiment_create(project=project, **experiment_payload(key, **overrides))
    return experiment_start(experiment=experiment)
