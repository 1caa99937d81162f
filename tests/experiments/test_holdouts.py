"""The project holdout's definition: services (validation naming the field, one running at a
time, frozen share and seed, audited), the REST API (4xx naming the field, roles) and its
form and actions on the pages."""

import pytest
from django.db import IntegrityError, transaction

from core.errors import DomainError
from experiments.holdouts import served_holdout
from experiments.models import AuditLog, Holdout, Role
from experiments.services.holdouts import (
    holdout_create,
    holdout_delete,
    holdout_end,
    holdout_start,
    holdout_update,
)

pytestmark = pytest.mark.django_db
API = "/api/v1/projects/shop/holdouts/"


def test_a_new_holdout_is_a_draft_with_a_random_seed_and_is_audited(project, admin_user):
    holdout = holdout_create(project=project, name="H1", share=0.05, actor=admin_user)
    assert holdout.status == "draft" and not holdout.enabled and holdout.started_at is None
    assert holdout.seed.startswith("holdout-") and len(holdout.seed) > 10
    other = holdout_create(project=project, name="H2", share=0.05)
    assert other.seed != holdout.seed
    entry = AuditLog.objects.get(action="holdout.create", target=f"holdout:{holdout.pk}")
    assert entry.actor == admin_user and entry.after["share"] == 0.05
    assert served_holdout(project.pk) is None  # a draft holds nobody out


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"share": 0}, "share"),
        ({"share": -0.1}, "share"),
        ({"share": 0.21}, "share"),
        ({"share": float("nan")}, "share"),
        ({"share": True}, "share"),
        ({"share": "0.1"}, "share"),
        ({"name": " "}, "name"),
        ({"seed": ""}, "seed"),
        ({"seed": " padded "}, "seed"),
        ({"seed": "x" * 65}, "seed"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(project, fields, field):
    arguments = {"name": "H", "share": 0.1, **fields}
    with pytest.raises(DomainError) as refused:
        holdout_create(project=project, **arguments)
    assert refused.value.field == field
    assert not Holdout.objects.exists()


def test_start_and_end_move_through_the_lifecycle_and_are_audited(project, admin_user):
    holdout = holdout_create(project=project, name="H", share=0.1)
    holdout = holdout_start(holdout=holdout, actor=admin_user)
    assert holdout.status == "running" and holdout.started_at is not None
    served = served_holdout(project.pk)
    assert served.id == holdout.pk and served.spec.share == 0.1
    assert served.spec.seed == holdout.seed and served.started_at == holdout.started_at
    holdout = holdout_end(holdout=holdout, actor=admin_user)
    assert holdout.status == "ended" and holdout.ended_at >= holdout.started_at
    assert served_holdout(project.pk) is None
    actions = list(
        AuditLog.objects.filter(target=f"holdout:{holdout.pk}")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["holdout.create", "holdout.start", "holdout.end"]
    with pytest.raises(DomainError) as refused:
        holdout_start(holdout=holdout)
    assert refused.value.field == "status"
    with pytest.raises(DomainError):
        holdout_end(holdout=holdout)


def test_only_one_holdout_runs_per_project(project):
    first = holdout_start(holdout=holdout_create(project=project, name="A", share=0.05))
    second = holdout_create(project=project, name="B", share=0.05)
    with pytest.raises(DomainError) as refused:
        holdout_start(holdout=second)
    assert refused.value.field == "enabled" and "'A'" in refused.value.message
    holdout_end(holdout=first)
    assert holdout_start(holdout=second).status == "running"


def test_the_database_keeps_one_enabled_holdout_per_project(project):
    """A write that bypasses the services still cannot run two holdouts (unique constraint)."""
    holdout_start(holdout=holdout_create(project=project, name="A", share=0.05))
    other = holdout_create(project=project, name="B", share=0.05)
    with pytest.raises(IntegrityError), transaction.atomic():
        Holdout.objects.filter(pk=other.pk).update(enabled=True, started_at=other.created_at)


def test_share_and_seed_are_frozen_once_started_but_the_name_is_not(project):
    holdout = holdout_create(project=project, name="H", share=0.1, seed="s-1")
    holdout = holdout_update(holdout=holdout, share=0.2, seed="s-2")  # a draft: free
    holdout = holdout_start(holdout=holdout)
    for field, value in (("share", 0.05), ("seed", "s-3")):
        with pytest.raises(DomainError) as refused:
            holdout_update(holdout=holdout, **{field: value})
        assert refused.value.field == field and "frozen" in refused.value.message
    renamed = holdout_update(holdout=holdout, name="Q1 holdout", share=0.2, description="why")
    assert renamed.name == "Q1 holdout" and renamed.share == 0.2 and renamed.seed == "s-2"
    with pytest.raises(DomainError) as refused:
        holdout_update(holdout=holdout, enabled=False)
    assert refused.value.field == "enabled"


def test_only_drafts_can_be_deleted(project):
    draft = holdout_create(project=project, name="D", share=0.1)
    holdout_delete(holdout=draft)
    assert not Holdout.objects.exists()
    started = holdout_start(holdout=holdout_create(project=project, name="S", share=0.1))
    with pytest.raises(DomainError) as refused:
        holdout_delete(holdout=started)
    assert refused.value.field == "status"
    assert AuditLog.objects.filter(action="holdout.delete").count() == 1


# --- the REST API --------------------------------------------------------------------------


def test_api_creates_reads_edits_starts_and_ends(api, project):
    created = api.post(API, {"name": "H", "share": 0.05}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["status"] == "draft" and body["share"] == 0.05 and body["seed"]
    url = f"{API}{body['id']}/"
    assert api.get(API).json()[0]["id"] == body["id"]
    assert api.patch(url, {"description": "all of 2027"}, format="json").json()["description"]
    started = api.post(f"{url}start", format="json")
    assert started.status_code == 200 and started.json()["status"] == "running"
    frozen = api.patch(url, {"share": 0.1}, format="json")
    assert frozen.status_code == 400 and frozen.json()["field"] == "share"
    ended = api.post(f"{url}end/", format="json")
    assert ended.json()["status"] == "ended" and ended.json()["ended_at"]
    assert api.delete(url).status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "H", "share": 0.5}, "share"),
        ({"name": "H", "share": "a lot"}, "share"),
        ({"name": "H"}, "share"),
        ({"share": 0.1}, "name"),
        ({"name": "H", "share": 0}, "share"),
        ({"name": "H", "share": 0.1, "seed": "x" * 65}, "seed"),
    ],
)
def test_api_refuses_bad_input_with_a_400_naming_the_field(api, project, body, field):
    response = api.post(API, body, format="json")
    assert response.status_code == 400
    data = response.json()
    assert field in data or data.get("field") == field, data


def test_api_roles_viewers_read_editors_write_admins_start(project, make_member):
    from rest_framework.test import APIClient

    holdout = holdout_create(project=project, name="H", share=0.1)
    clients = {}
    for role in (Role.VIEWER, Role.EDITOR):
        clients[role] = APIClient()
        clients[role].force_authenticate(make_member(role, role))
    url = f"{API}{holdout.pk}/"
    assert clients[Role.VIEWER].get(url).status_code == 200
    assert clients[Role.VIEWER].patch(url, {"name": "x"}, format="json").status_code == 403
    assert clients[Role.EDITOR].patch(url, {"name": "x"}, format="json").status_code == 200
    assert clients[Role.EDITOR].post(f"{url}start").status_code == 403
    assert Holdout.objects.get(pk=holdout.pk).status == "draft"


def test_another_projects_holdout_is_not_found(api, project, django_user_model):
    from experiments.services import project_create

    other = project_create(
        slug="other", name="Other", owner=django_user_model.objects.create_user("bob")
    )
    theirs = holdout_create(project=other, name="Theirs", share=0.1)
    assert api.get(f"{API}{theirs.pk}/").status_code == 404
    assert api.get(f"/api/v1/projects/other/holdouts/{theirs.pk}/").status_code == 404


# --- pages ---------------------------------------------------------------------------------


def test_the_form_creates_a_holdout_in_percent_and_shows_errors_by_field(
    client, admin_user, project
):
    client.force_login(admin_user)
    page = client.post(
        "/p/shop/holdout/new/", {"name": "H", "share": "25", "seed": ""}, follow=True
    )
    assert page.status_code == 200 and not Holdout.objects.exists()
    assert b"field-share" in page.content and b"has-error" in page.content
    done = client.post("/p/shop/holdout/new/", {"name": "H", "share": "2.5"}, follow=True)
    holdout = Holdout.objects.get()
    assert holdout.share == 0.025 and done.redirect_chain[-1][0] == f"/p/shop/holdout/{holdout.pk}/"
    client.post(f"/p/shop/holdout/{holdout.pk}/start/", {"confirmed": "yes"})
    holdout.refresh_from_db()
    assert holdout.status == "running"
    edit = client.get(f"/p/shop/holdout/{holdout.pk}/edit/")
    assert b"frozen" in edit.content
