"""The flags REST API: the contract's paths and JSON shapes, roles (viewers read, editors
change non-production, admins production; approval makes a 202 change request; the kill
switch), bad input a 400 naming the field, other projects' objects 404, the OpenAPI schema."""

import json

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from experiments.models import Role
from experiments.services import project_create
from flags.models import FlagEnvironment, ScheduledChange
from flags.services import flag_create, segment_create

pytestmark = pytest.mark.django_db

P = "/api/v1/projects/shop"
FLAG = {
    "key": "new-checkout",
    "name": "New checkout",
    "description": "The one-page checkout.",
    "type": "string",
    "variations": [{"key": "blue", "value": "#00f"}, {"key": "red", "value": "#f00"}],
    "off_variation": "blue",
    "tags": ["checkout"],
    "temporary": True,
}


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def created(api, project):
    r = api.post(f"{P}/flags/", FLAG, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def test_create_answers_the_contract_shape(created):
    assert {
        "key",
        "name",
        "description",
        "type",
        "variations",
        "off_variation",
        "tags",
        "temporary",
        "archived",
        "environments",
        "prerequisites",
        "owner",
    } <= set(created)
    assert created["environments"] == {
        env: {"enabled": False, "default_variation": "blue", "rules": []}
        for env in ("production", "staging", "development")
    }
    assert created["owner"] == "alice" and created["archived"] is False


def test_patch_environments_nested_and_read_back(api, created, project):
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    body = {
        "name": "Checkout colour",
        "environments": {
            "staging": {
                "enabled": True,
                "default_variation": "red",
                "rules": [
                    {"type": "force", "segment": "staff", "variation": "red"},
                    {
                        "id": "ten",
                        "type": "rollout",
                        "hash_attribute": "id",
                        "weights": {"red": 0.1, "blue": 0.9},
                    },
                ],
            }
        },
    }
    r = api.patch(f"{P}/flags/new-checkout/", body, format="json")
    assert r.status_code == 200, r.content
    staging = r.json()["environments"]["staging"]
    assert staging["enabled"] and staging["default_variation"] == "red"
    assert staging["rules"][0]["id"] and staging["rules"][0]["segment"] == "staff"
    assert staging["rules"][1] == {
        "id": "ten",
        "type": "rollout",
        "hash_attribute": "id",
        "weights": {"blue": 0.9, "red": 0.1},
    }
    assert r.json()["name"] == "Checkout colour"
    assert api.get(f"{P}/flags/new-checkout/").json() == r.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "environments": {
                    "staging": {"rules": [{"type": "rollout", "weights": {"red": 0.5}}]}
                }
            },
            "environments.staging.rules[0].weights",
        ),
        (
            {"environments": {"staging": {"default_variation": "green"}}},
            "environments.staging.default_variation",
        ),
        ({"environments": {"nowhere": {"enabled": True}}}, "environments.nowhere"),
        (
            {"variations": [{"key": "blue", "value": 3}, {"key": "red", "value": "#f00"}]},
            "variations[0].value",
        ),
        ({"off_variation": "green"}, "off_variation"),
        ({"owner": "nobody"}, "owner"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, created, body, field):
    r = api.patch(f"{P}/flags/new-checkout/", body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["field"] == field


def test_serializer_shape_errors_name_the_field(api, project):
    r = api.post(f"{P}/flags/", {**FLAG, "type": "float"}, format="json")
    assert r.status_code == 400 and "type" in r.json()
    r = api.post(f"{P}/flags/", {**FLAG, "key": "bad key"}, format="json")
    assert r.status_code == 400 and "key" in r.json()


def test_a_failed_environment_part_rolls_back_the_definition(api, created):
    body = {"name": "Changed", "environments": {"staging": {"default_variation": "green"}}}
    assert api.patch(f"{P}/flags/new-checkout/", body, format="json").status_code == 400
    assert api.get(f"{P}/flags/new-checkout/").json()["name"] == "New checkout"


def test_list_filters(api, created, project):
    flag_create(project=project, key="dark-mode", name="Dark mode", tags=["ui"])
    keys = lambda q: [f["key"] for f in api.get(f"{P}/flags/{q}").json()]  # noqa: E731
    assert keys("") == ["dark-mode", "new-checkout"]
    assert keys("?q=dark") == ["dark-mode"]
    assert keys("?tag=checkout") == ["new-checkout"]
    assert keys("?owner=alice") == ["new-checkout"]
    assert keys("?archived=true") == []
    api.patch(f"{P}/flags/dark-mode/", {"archived": True}, format="json")
    assert keys("?archived=all") == ["dark-mode", "new-checkout"]
    r = api.get(f"{P}/flags/?archived=maybe")
    assert r.status_code == 400 and r.json()["field"] == "archived"


def test_toggle_and_the_kill_switch(api, created, project, make_member):
    editor = client_for(make_member("eddie", Role.EDITOR))
    viewer = client_for(make_member("vera", Role.VIEWER))
    url = f"{P}/flags/new-checkout/environments/staging/toggle"
    assert viewer.post(url, {"enabled": True}, format="json").status_code == 403
    r = editor.post(url, {"enabled": True}, format="json")
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert r.json()["environment"] == "staging"
    prod = f"{P}/flags/new-checkout/environments/production/toggle"
    assert editor.post(prod, {"enabled": True}, format="json").status_code == 403
    assert api.post(prod, {"enabled": True}, format="json").status_code == 200
    project.require_approval = True
    project.save()
    r = api.post(prod, {"enabled": False}, format="json")  # the kill switch: at once
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = api.post(prod, {"enabled": "perhaps"}, format="json")
    assert r.status_code == 400 and "enabled" in r.json()
    assert (
        api.post(
            f"{P}/flags/new-checkout/environments/nope/toggle", {"enabled": False}, format="json"
        ).status_code
        == 404
    )


def test_approval_flow_over_the_api(api, created, project, make_member):
    project.require_approval = True
    project.save()
    editor = client_for(make_member("eddie", Role.EDITOR))
    other_admin = client_for(make_member("bob", Role.ADMIN))
    body = {"environments": {"production": {"enabled": True}}}
    r = editor.patch(f"{P}/flags/new-checkout/", body, format="json")
    assert r.status_code == 202, r.content
    request = r.json()
    assert request["status"] == "pending" and request["change"] == {"enabled": True}
    assert request["flag"] == "new-checkout" and request["environment"] == "production"
    assert request["requested_by"] == "eddie"
    listed = api.get(f"{P}/change-requests/?status=pending").json()
    assert [c["id"] for c in listed] == [request["id"]]
    cr = f"{P}/change-requests/{request['id']}"
    assert editor.post(f"{cr}/approve", {}, format="json").status_code == 403
    r = other_admin.post(f"{cr}/approve", {"comment": "ok"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "applied"
    assert r.json()["reviewed_by"] == "bob"
    assert FlagEnvironment.objects.get(
        flag__key="new-checkout", environment__key="production"
    ).enabled
    assert other_admin.post(f"{cr}/reject", {}, format="json").status_code == 400  # not pending
    # The requester may not approve their own; the explicit create works too.
    r = api.post(
        f"{P}/change-requests/",
        {
            "flag": "new-checkout",
            "environment": "production",
            "change": {"enabled": False},
            "comment": "off",
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    own = f"{P}/change-requests/{r.json()['id']}"
    assert api.post(f"{own}/approve", {}, format="json").status_code == 403
    assert api.post(f"{own}/cancel", {}, format="json").json()["status"] == "cancelled"


def test_schedules_list_create_cancel(api, created):
    url = f"{P}/flags/new-checkout/schedules/"
    at = (timezone.now() + timezone.timedelta(hours=2)).isoformat()
    r = api.post(
        url,
        {"environment": "staging", "at": at, "change": {"enabled": True}, "note": "launch"},
        format="json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "pending" and r.json()["environment"] == "staging"
    assert [s["id"] for s in api.get(url).json()] == [r.json()["id"]]
    bad = api.post(
        url, {"environment": "staging", "at": at, "change": {"enabled": 3}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["field"] == "change.enabled"
    assert api.delete(f"{url}{r.json()['id']}/").status_code == 204
    assert ScheduledChange.objects.get().status == "cancelled"
    assert api.delete(f"{url}{2**63}/").status_code == 404


def test_segments_crud_with_used_by(api, created):
    body = {
        "key": "nl",
        "name": "NL",
        "condition": {"country": "NL"},
        "include": ["u1"],
        "exclude": ["u2"],
    }
    r = api.post(f"{P}/segments/", body, format="json")
    assert r.status_code == 201, r.content
    assert {k: r.json()[k] for k in body} == body and r.json()["used_by"] == []
    api.patch(
        f"{P}/flags/new-checkout/",
        {
            "environments": {
                "staging": {"rules": [{"type": "force", "segment": "nl", "variation": "red"}]}
            }
        },
        format="json",
    )
    assert api.get(f"{P}/segments/nl/").json()["used_by"] == ["flag:new-checkout@staging"]
    r = api.delete(f"{P}/segments/nl/")
    assert r.status_code == 400 and "flag:new-checkout@staging" in r.json()["detail"]
    r = api.patch(f"{P}/segments/nl/", {"condition": {"country": {"$in": "NL"}}}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "condition"
    r = api.patch(f"{P}/segments/nl/", {"name": "Netherlands"}, format="json")
    assert r.json()["name"] == "Netherlands"
    assert [s["key"] for s in api.get(f"{P}/segments/").json()] == ["nl"]


def test_environments_list_and_create(api, project, make_member):
    r = api.get(f"{P}/environments/")
    assert [e["key"] for e in r.json()] == ["production", "staging", "development"]
    assert r.json()[0]["client_key"] == project.client_key and r.json()[0]["production"]
    editor = client_for(make_member("eddie", Role.EDITOR))
    assert (
        editor.post(f"{P}/environments/", {"key": "qa", "name": "QA"}, format="json").status_code
        == 403
    )
    r = api.post(f"{P}/environments/", {"key": "qa", "name": "QA"}, format="json")
    assert r.status_code == 201 and set(r.json()) >= {"key", "name", "client_key"}
    r = api.post(f"{P}/environments/", {"key": "qa", "name": "QA"}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "key"


def test_other_projects_objects_are_404(api, created, django_user_model):
    mallory = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    project_create(slug="evil", name="Evil", owner=mallory)
    evil = client_for(mallory)
    for url in (
        f"{P}/flags/",
        f"{P}/flags/new-checkout/",
        f"{P}/segments/",
        f"{P}/environments/",
        f"{P}/change-requests/",
    ):
        assert evil.get(url).status_code == 404, url
    assert evil.get("/api/v1/projects/evil/flags/new-checkout/").status_code == 404
    r = evil.post(
        "/api/v1/projects/evil/flags/new-checkout/environments/production/toggle",
        {"enabled": False},
        format="json",
    )
    assert r.status_code == 404


def test_delete_only_archived(api, created):
    assert api.delete(f"{P}/flags/new-checkout/").status_code == 400
    api.patch(f"{P}/flags/new-checkout/", {"archived": True}, format="json")
    assert api.delete(f"{P}/flags/new-checkout/").status_code == 204
    assert api.get(f"{P}/flags/new-checkout/").status_code == 404


def test_the_schema_types_the_flags_api(tmp_path):
    out = tmp_path / "schema.json"
    call_command("spectacular", "--file", str(out), "--format", "openapi-json")
    schema = json.loads(out.read_text())
    components = schema["components"]["schemas"]

    def body(path, method, code):
        node = schema["paths"][path][method]["responses"][code]["content"]["application/json"]
        node = node["schema"]
        node = node.get("items", node)
        return components[node["$ref"].rsplit("/", 1)[1]]

    flag = body("/api/v1/projects/{project}/flags/", "get", "200")
    assert {"key", "variations", "environments", "off_variation"} <= set(flag["properties"])
    toggle = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/toggle"
    assert {"200", "202"} <= set(schema["paths"][toggle]["post"]["responses"])
    assert "id" in body("/api/v1/projects/{project}/change-requests/", "get", "200")["properties"]
    assert "used_by" in body("/api/v1/projects/{project}/segments/", "get", "200")["properties"]
    assert (
        "client_key" in body("/api/v1/projects/{project}/environments/", "get", "200")["properties"]
    )
    assert "RuleSerializer" not in components and "Rule" in components
