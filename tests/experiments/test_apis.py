"""The user API: experiments and lifecycle through REST, with role checks."""

import pytest
from rest_framework.test import APIClient

from experiments.models import Role
from tests.factories import experiment_payload

pytestmark = pytest.mark.django_db


def test_create_and_start_experiment(api, project, metrics):
    r = api.post("/api/v1/projects/shop/experiments/", experiment_payload(), format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "draft" and [v["key"] for v in body["variants"]] == [
        "control",
        "treatment",
    ]
    r = api.post("/api/v1/projects/shop/experiments/checkout-v2/start")
    assert r.status_code == 200 and r.json()["status"] == "running"


def test_bad_weights_are_a_400_naming_the_field(api, project, metrics):
    payload = experiment_payload(
        variants=[
            {"key": "control", "weight": 0.9, "is_control": True},
            {"key": "t", "weight": 0.9},
        ]
    )
    r = api.post("/api/v1/projects/shop/experiments/", payload, format="json")
    assert r.status_code == 400 and "variants" in r.json()


def test_viewer_cannot_create(project, metrics, make_member):
    client = APIClient()
    client.force_authenticate(make_member("vic", Role.VIEWER))
    r = client.post("/api/v1/projects/shop/experiments/", experiment_payload(), format="json")
    assert r.status_code == 403


def test_other_project_is_invisible(project, django_user_model):
    stranger = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    client = APIClient()
    client.force_authenticate(stranger)
    assert client.get("/api/v1/projects/shop/experiments/").status_code == 404


def test_lifecycle_rule_is_a_400_with_message(api, project, metrics):
    api.post("/api/v1/projects/shop/experiments/", experiment_payload(), format="json")
    r = api.post("/api/v1/projects/shop/experiments/checkout-v2/pause")
    assert r.status_code == 400 and "Cannot pause" in r.json()["detail"]
