"""Every experiments model has a working Django admin; the audit log cannot be edited there."""

import pytest
from django.apps import apps
from django.test import Client

from tests.factories import running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    return client


def test_every_model_has_an_admin_changelist(superuser_client, project, metrics):
    experiment = running_experiment(project)
    for model in apps.get_app_config("experiments").get_models():
        name = model._meta.model_name
        r = superuser_client.get(f"/admin/experiments/{name}/")
        assert r.status_code == 200, name
    r = superuser_client.get(f"/admin/experiments/experiment/{experiment.pk}/change/")
    assert r.status_code == 200


def test_audit_log_is_read_only_in_the_admin(superuser_client, project, metrics):
    running_experiment(project)
    assert superuser_client.get("/admin/experiments/auditlog/add/").status_code == 403
