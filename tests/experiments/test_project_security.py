"""Project-level security settings through the service, the settings page and the API: who may
create projects (ABACUS_PROJECT_CREATION), webhook URLs inside the network refused at save time,
and the webhook signing secret (reveal and rotate: admins only, audited)."""

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from rest_framework.test import APIClient

from experiments.models import AuditLog, Project, Role
from experiments.services import (
    project_create,
    project_update,
    project_webhook_secret_reveal,
    project_webhook_secret_rotate,
)

pytestmark = pytest.mark.django_db

INTERNAL_URLS = [
    "http://127.0.0.1:8499/hook",
    "http://localhost:6379/",
    "http://169.254.169.254/latest/meta-data/",
]


@pytest.fixture
def page(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- who may create projects ---------------------------------------------------------------


def test_by_default_a_signed_in_non_staff_person_cannot_create_a_project(admin_user, page):
    """The finding: any logged-in user created a project and became its admin."""
    r = _api(admin_user).post("/api/v1/projects/", {"slug": "mine", "name": "Mine"}, format="json")
    assert r.status_code == 403 and "ABACUS_PROJECT_CREATION" in r.json()["detail"]
    r = page.post("/", {"slug": "mine", "name": "Mine"})
    assert r.status_code == 403 and "ABACUS_PROJECT_CREATION" in r.content.decode()
    assert 'name="slug"' not in page.get("/").content.decode()  # no form offered
    with pytest.raises(PermissionDenied):
        project_create(slug="mine", name="Mine", actor=admin_user)
    assert not Project.objects.filter(slug="mine").exists()


def test_staff_create_projects_and_become_their_admin(django_user_model):
    staff = django_user_model.objects.create_user("sam", "s@example.com", "pw", is_staff=True)
    r = _api(staff).post("/api/v1/projects/", {"slug": "mine", "name": "Mine"}, format="json")
    assert r.status_code == 201 and r.json()["role"] == Role.ADMIN
    client = Client()
    client.force_login(staff)
    r = client.post("/", {"slug": "other", "name": "Other"})
    assert r.status_code == 302 and r["Location"] == "/p/other/"


def test_project_creation_anyone_lets_every_signed_in_person_create(admin_user, settings):
    settings.ABACUS_PROJECT_CREATION = "anyone"
    r = _api(admin_user).post("/api/v1/projects/", {"slug": "mine", "name": "Mine"}, format="json")
    assert r.status_code == 201
    entry = AuditLog.objects.get(action="project.create", target="mine")
    assert entry.actor == admin_user


# --- webhook URLs inside the network ---------------------------------------------------------


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_an_internal_webhook_url_is_refused_by_the_settings_form(url, project, page):
    r = page.post("/p/shop/settings/project/", {"name": "Shop", "webhook_url": url})
    assert r.status_code == 200
    errors = r.context["settings_form"].errors
    assert "webhook_url" in errors and "ABACUS_WEBHOOK_ALLOWED_HOSTS" in errors["webhook_url"][0]
    project.refresh_from_db()
    assert project.webhook_url == ""


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_an_internal_webhook_url_is_a_400_naming_the_field_in_the_api(url, project, api):
    r = api.patch("/api/v1/projects/shop/settings/", {"webhook_url": url}, format="json")
    assert r.status_code == 400 and "webhook_url" in r.json()
    project.refresh_from_db()
    assert project.webhook_url == ""


def test_an_allow_listed_internal_receiver_can_be_saved(project, api, settings):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    url = "http://127.0.0.1:8499/hook"
    r = api.patch("/api/v1/projects/shop/settings/", {"webhook_url": url}, format="json")
    assert r.status_code == 200 and r.json()["webhook_url"] == url
    assert "experiment.srm_detected" in r.json()["webhook_events"]


def test_the_service_refuses_an_internal_webhook_url(project):
    from core.errors import DomainError

    with pytest.raises(DomainError) as caught:
        project_update(project=project, webhook_url="http://[::1]:9000/")
    assert caught.value.field == "webhook_url"


def test_project_settings_api_is_for_admins_only(project, make_member):
    editor = make_member("ed", Role.EDITOR)
    r = _api(editor).patch(
        "/api/v1/projects/shop/settings/", {"webhook_url": "https://example.com/h"}, format="json"
    )
    assert r.status_code == 403


# --- the signing secret ----------------------------------------------------------------------


def test_admins_reveal_the_signing_secret_on_the_settings_page_audited(project, page):
    secret = project.webhook_secret
    assert secret not in page.get("/p/shop/settings/").content.decode()  # not until asked
    r = page.post("/p/shop/settings/webhook-secret/reveal/")
    assert r.status_code == 200 and secret in r.content.decode()
    assert "no-cache" in r["Cache-Control"] or "no-store" in r["Cache-Control"]
    entry = AuditLog.objects.get(action="project.webhook_secret.reveal")
    assert secret not in str(entry.after) and entry.actor_label == "alice"


def test_admins_rotate_the_signing_secret_on_the_page_and_in_the_api(project, page, api):
    old = project.webhook_secret
    r = page.post("/p/shop/settings/webhook-secret/rotate/")
    project.refresh_from_db()
    assert project.webhook_secret != old and project.webhook_secret in r.content.decode()
    r = api.post("/api/v1/projects/shop/webhook-secret/rotate")
    assert r.status_code == 200
    body = r.json()
    project.refresh_from_db()
    assert body["webhook_secret"] == project.webhook_secret
    assert body["signature_header"] == "X-Abacus-Signature"
    rotations = AuditLog.objects.filter(action="project.webhook_secret.rotate")
    assert rotations.count() == 2
    assert all(
        project.webhook_secret not in str(e.before) + str(e.after) and old not in str(e.before)
        for e in rotations
    )
    r = api.post("/api/v1/projects/shop/webhook-secret/reveal")
    assert r.status_code == 200 and r.json()["webhook_secret"] == project.webhook_secret
    assert r["Cache-Control"] == "no-store"


@pytest.mark.parametrize("role", [Role.EDITOR, Role.ANALYST, Role.VIEWER])
def test_lower_roles_never_see_the_signing_secret(role, project, make_member):
    user = make_member("pat", role)
    client = Client()
    client.force_login(user)
    secret = project.webhook_secret
    for action in ("reveal", "rotate"):
        r = client.post(f"/p/shop/settings/webhook-secret/{action}/")
        assert r.status_code == 403 and secret not in r.content.decode()
    for path in ("reveal", "rotate"):
        r = _api(user).post(f"/api/v1/projects/shop/webhook-secret/{path}")
        assert r.status_code == 403 and secret not in r.content.decode()
    for url in ("/p/shop/", "/p/shop/settings/"):
        assert secret not in client.get(url).content.decode()
    project.refresh_from_db()
    assert project.webhook_secret == secret
    assert not AuditLog.objects.filter(action__startswith="project.webhook_secret").exists()


def test_reveal_and_rotate_services_audit_with_fingerprints(project, admin_user):
    revealed = project_webhook_secret_reveal(project=project, actor=admin_user)
    assert revealed == project.webhook_secret
    new = project_webhook_secret_rotate(project=project, actor=admin_user)
    assert Project.objects.get(pk=project.pk).webhook_secret == new
    actions = list(
        AuditLog.objects.filter(action__startswith="project.webhook_secret").values_list(
            "action", flat=True
        )
    )
    assert sorted(actions) == ["project.webhook_secret.reveal", "project.webhook_secret.rotate"]
