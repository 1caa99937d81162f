"""The releases REST API: the contract's shapes (DESIGN 11), a 400 naming the field for every
bad body, roles (viewers read, production needs an admin), release-scoped service keys bound to
their environment (key:<name> in the transitions), other projects' releases 404, each move,
the checks window and the OpenAPI schema."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from experiments.models import Environment, Role
from experiments.services import api_key_create, project_create
from flags.models import FlagEnvironment
from flags.services import flag_create, flag_environment_update
from releases.models import Release, ReleaseStatus, ReleaseTransition
from releases.monitor import release_analyze

pytestmark = pytest.mark.django_db

P = "/api/v1/projects/shop"
STEPS = [
    {"percent": 10, "min_minutes": 0, "min_units": 200},
    {"percent": 50, "min_minutes": 0, "min_units": 200},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]
BODY = {
    "flag": "new-checkout",
    "environment": "production",
    "variation": "on",
    "steps": STEPS,
    "metrics": [
        {"metric": "error-rate", "role": "guardrail", "non_inferiority_margin": 0.02},
        {"metric": "purchase", "role": "primary"},
    ],
    "description": "ship the one-page checkout",
}
RELEASE_FIELDS = {
    "id", "flag", "environment", "kind", "variation", "baseline_variation", "steps", "metrics",
    "auto_rollback", "alpha", "analysis_interval_seconds", "status", "step", "percent",
    "decision", "started_at", "finished_at", "created_at", "created_by", "transitions",
}  # fmt: skip


def client_for(user=None, secret: str | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    if secret is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def key_client(project, environment: str = "production", scopes=("release",), name="deploy-bot"):
    created = api_key_create(
        project=project, name=name, scopes=list(scopes), environment=environment
    )
    return client_for(secret=created.secret)


@pytest.fixture
def staging(project, flag, admin_user):
    env = Environment.objects.get(project=project, key="staging")
    flag_environment_update(
        flag=flag, environment=env, actor=admin_user, enabled=True, default_variation="off"
    )
    return env


@pytest.fixture
def created(api, flag, health_metrics):
    r = api.post(f"{P}/releases/", BODY, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def _bad(client, body, field, status=400):
    r = client.post(f"{P}/releases/", body, format="json")
    assert r.status_code == status, r.content
    data = r.json()
    assert data.get("field") == field or field in data, data
    return data


# -- shapes ---------------------------------------------------------------------------------------


def test_create_answers_the_release_with_its_transitions(created, admin_user):
    assert set(created) >= RELEASE_FIELDS
    assert created["flag"] == "new-checkout" and created["environment"] == "production"
    assert (created["kind"], created["variation"], created["baseline_variation"]) == (
        "canary", "on", "off",
    )  # fmt: skip
    assert created["status"] == "running" and created["step"] == 0 and created["percent"] == 10
    assert created["steps"][0] == {"percent": 10.0, "min_minutes": 0.0, "min_units": 200}
    assert created["metrics"] == [
        {"metric": "error-rate", "role": "guardrail", "non_inferiority_margin": 0.02},
        {"metric": "purchase", "role": "primary", "non_inferiority_margin": None},
    ]
    assert set(created["decision"]) == {"action", "reasons", "waits_for", "at"}
    assert created["decision"]["action"] == "hold"
    assert created["created_by"] == "alice" and created["auto_rollback"] is True
    assert [(t["from_status"], t["to_status"], t["actor"]) for t in created["transitions"]] == [
        ("", "scheduled", "alice"),
        ("scheduled", "running", "alice"),
    ]
    assert set(created["transitions"][0]) == {
        "from_status", "to_status", "from_step", "to_step", "actor", "reason", "at",
    }  # fmt: skip


def test_get_is_the_same_shape_as_create(api, created):
    r = api.get(f"{P}/releases/{created['id']}/")
    assert r.status_code == 200
    assert r.json() == created


def test_minimal_body_takes_the_defaults(api, flag):
    r = api.post(
        f"{P}/releases/",
        {"flag": "new-checkout", "environment": "production", "variation": "on"},
        format="json",
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert [s["percent"] for s in body["steps"]] == [1, 5, 25, 50, 100]
    assert body["baseline_variation"] == "off" and body["metrics"] == []


def test_blue_green_is_one_switch(api, flag):
    r = api.post(
        f"{P}/releases/",
        {"flag": "new-checkout", "environment": "production", "variation": "on",
         "kind": "blue_green"},
        format="json",
    )  # fmt: skip
    assert r.status_code == 201, r.content
    assert r.json()["kind"] == "blue_green" and r.json()["percent"] == 100


def test_list_is_newest_first_and_filters(api, project, flag, staging, admin_user):
    other = flag_create(project=project, key="search", name="Search", actor=admin_user)
    production = Environment.objects.get(project=project, key="production")
    flag_environment_update(flag=other, environment=production, actor=admin_user, enabled=True)
    ids = []
    for body in (
        {"flag": "new-checkout", "environment": "production", "variation": "on"},
        {"flag": "new-checkout", "environment": "staging", "variation": "on"},
        {"flag": "search", "environment": "production", "variation": "on"},
    ):
        r = api.post(f"{P}/releases/", body, format="json")
        assert r.status_code == 201, r.content
        ids.append(r.json()["id"])
    api.post(f"{P}/releases/{ids[0]}/rollback", {}, format="json")
    listed = api.get(f"{P}/releases/").json()
    assert [r["id"] for r in listed] == ids[::-1]
    assert "transitions" not in listed[0] and listed[0]["created_by"] == "alice"

    def ids_of(query):
        r = api.get(f"{P}/releases/?{query}")
        assert r.status_code == 200, r.content
        return [x["id"] for x in r.json()]

    assert ids_of("environment=staging") == [ids[1]]
    assert ids_of("flag=new-checkout") == [ids[1], ids[0]]
    assert ids_of("status=rolled_back") == [ids[0]]
    assert ids_of("status=running&environment=production") == [ids[2]]
    assert ids_of("flag=nope") == []
    assert ids_of("limit=1") == [ids[2]]
    assert api.get(f"{P}/releases/?status=gone").json().keys() == {"status"}
    assert api.get(f"{P}/releases/?limit=0").status_code == 400


def test_list_needs_a_fixed_number_of_queries(
    api, flag, staging, health_metrics, django_assert_max_num_queries
):
    for env in ("production", "staging"):
        body = {"flag": "new-checkout", "environment": env, "variation": "on",
                "metrics": ["purchase", "error-rate"]}  # fmt: skip
        assert api.post(f"{P}/releases/", body, format="json").status_code == 201
    with django_assert_max_num_queries(8):
        assert len(api.get(f"{P}/releases/").json()) == 2


# -- 400s naming the field -------------------------------------------------------------------


def test_unknown_flag_or_environment_is_a_400_naming_it(api, flag):
    _bad(api, {**BODY, "flag": "nope", "metrics": []}, "flag")
    data = _bad(api, {**BODY, "environment": "moon", "metrics": []}, "environment")
    assert "production" in data["detail"]


def test_bad_steps_are_a_400_naming_the_step(api, flag):
    body = {**BODY, "metrics": []}
    steps = [{"percent": 50, "min_minutes": 0, "min_units": 0}, {"percent": 10}]
    _bad(api, {**body, "steps": steps}, "steps[1].percent")
    _bad(api, {**body, "steps": [{"percent": 150}]}, "steps[0].percent")
    _bad(api, {**body, "steps": [{"percent": 10, "min_units": -1}]}, "steps[0].min_units")
    _bad(api, {**body, "steps": [{"percent": 10, "speed": 2}]}, "steps[0].speed")
    _bad(api, {**body, "steps": "fast"}, "steps")
    _bad(api, {**body, "kind": "blue_green", "steps": STEPS}, "steps")


def test_unknown_metric_role_or_margin_is_a_400_naming_it(api, flag, health_metrics):
    _bad(api, {**BODY, "metrics": [{"metric": "nope"}]}, "metrics[0].metric")
    _bad(api, {**BODY, "metrics": [{"metric": "purchase", "role": "boss"}]}, "metrics[0].role")
    margin = [{"metric": "purchase"}, {"metric": "error-rate", "non_inferiority_margin": 5}]
    _bad(api, {**BODY, "metrics": margin}, "metrics[1].non_inferiority_margin")
    _bad(api, {**BODY, "metrics": [{"metric": "purchase"}, "purchase"]}, "metrics[1].metric")


def test_unknown_variation_or_same_baseline_is_a_400(api, flag):
    body = {**BODY, "metrics": []}
    _bad(api, {**body, "variation": "purple"}, "variation")
    _bad(api, {**body, "baseline_variation": "purple"}, "baseline_variation")
    _bad(api, {**body, "baseline_variation": "on"}, "variation")


def test_a_flag_off_in_the_environment_is_a_400(api, project, flag, admin_user):
    # staging: never turned on
    data = _bad(api, {**BODY, "environment": "staging", "metrics": []}, "environment")
    assert "off in staging" in data["detail"]


def test_other_bad_fields_are_400s_naming_them(api, flag, health_metrics):
    _bad(api, {**BODY, "kind": "big_bang"}, "kind")
    _bad(api, {**BODY, "alpha": 0.9}, "alpha")
    _bad(api, {**BODY, "alpha": "lots"}, "alpha")
    _bad(api, {**BODY, "auto_rollback": "maybe"}, "auto_rollback")
    _bad(api, {**BODY, "analysis_interval_seconds": 1.5}, "analysis_interval_seconds")
    _bad(api, {**BODY, "analysis_interval_seconds": 10**9}, "analysis_interval_seconds")
    _bad(api, {**BODY, "start_at": "tomorrow"}, "start_at")
    _bad(api, {**BODY, "colour": "red"}, "colour")
    _bad(api, {k: v for k, v in BODY.items() if k != "variation"}, "variation")
    r = api.post(f"{P}/releases/", [BODY], format="json")
    assert r.status_code == 400


def test_a_second_live_release_of_the_flag_is_a_400(api, created):
    _bad(api, {**BODY, "metrics": []}, "flag")


# -- roles ------------------------------------------------------------------------------------


def test_viewers_read_but_may_not_create_or_move(created, make_member):
    viewer = client_for(make_member("vera", Role.VIEWER))
    assert viewer.get(f"{P}/releases/").status_code == 200
    assert viewer.get(f"{P}/releases/{created['id']}/").status_code == 200
    assert viewer.get(f"{P}/releases/{created['id']}/checks/").status_code == 200
    r = viewer.post(f"{P}/releases/", {**BODY, "metrics": []}, format="json")
    assert r.status_code == 403
    for action in ("pause", "advance", "rollback"):
        assert viewer.post(f"{P}/releases/{created['id']}/{action}").status_code == 403
    assert Release.objects.get(pk=created["id"]).status == ReleaseStatus.RUNNING


def test_editors_release_in_staging_but_production_needs_an_admin(flag, staging, make_member):
    editor = client_for(make_member("eddie", Role.EDITOR))
    r = editor.post(f"{P}/releases/", {**BODY, "metrics": []}, format="json")
    assert r.status_code == 403, r.content
    r = editor.post(
        f"{P}/releases/", {**BODY, "environment": "staging", "metrics": []}, format="json"
    )
    assert r.status_code == 201, r.content
    assert r.json()["created_by"] == "eddie"


def test_another_projects_release_is_a_404(api, created, django_user_model):
    mallory = django_user_model.objects.create_user("mallory", "m@example.com", "pw-m-12345")
    project_create(slug="evil", name="Evil", owner=mallory)
    evil = client_for(mallory)
    assert evil.get(f"{P}/releases/{created['id']}/").status_code == 404
    assert evil.get(f"{P}/releases/").status_code == 404
    assert evil.post(f"{P}/releases/{created['id']}/rollback").status_code == 404
    base = f"/api/v1/projects/evil/releases/{created['id']}"
    assert evil.get(f"{base}/").status_code == 404
    assert evil.get(f"{base}/checks/").status_code == 404
    assert evil.post(f"{base}/rollback").status_code == 404
    assert api.get(f"{P}/releases/{created['id'] + 1000}/").status_code == 404
    assert Release.objects.get(pk=created["id"]).status == ReleaseStatus.RUNNING


def test_anonymous_callers_are_401(created):
    assert APIClient().get(f"{P}/releases/").status_code == 401
    bad_key = client_for(secret="abk_nope_nope")
    assert bad_key.get(f"{P}/releases/").status_code == 401


# -- service keys ------------------------------------------------------------------------------


def test_a_release_key_runs_its_environments_releases(project, flag, health_metrics):
    bot = key_client(project)
    r = bot.post(f"{P}/releases/", BODY, format="json")
    assert r.status_code == 201, r.content
    release = r.json()
    assert release["created_by"] == "key:deploy-bot"
    assert {t["actor"] for t in release["transitions"]} == {"key:deploy-bot"}
    assert bot.get(f"{P}/releases/{release['id']}/").status_code == 200
    assert bot.get(f"{P}/releases/{release['id']}/checks/").status_code == 200
    assert [x["id"] for x in bot.get(f"{P}/releases/").json()] == [release["id"]]
    r = bot.post(f"{P}/releases/{release['id']}/rollback", {"reason": "smoke test failed"})
    assert r.status_code == 200, r.content
    last = r.json()["transitions"][-1]
    assert (last["to_status"], last["actor"], last["reason"]) == (
        "rolled_back", "key:deploy-bot", "smoke test failed",
    )  # fmt: skip
    assert ReleaseTransition.objects.filter(release_id=release["id"], actor=None).count() == 3
    config = FlagEnvironment.objects.get(flag=flag, environment__key="production")
    assert config.default_variation == "off" and config.rules == []


def test_a_key_of_another_environment_is_a_403(api, project, created, staging):
    bot = key_client(project, environment="staging")
    rid = created["id"]
    assert bot.get(f"{P}/releases/{rid}/").status_code == 403
    assert bot.get(f"{P}/releases/{rid}/checks/").status_code == 403
    r = bot.post(f"{P}/releases/{rid}/rollback", {}, format="json")
    assert r.status_code == 403 and "staging" in r.json()["detail"]
    assert bot.post(f"{P}/releases/", {**BODY, "metrics": []}, format="json").status_code == 403
    assert bot.get(f"{P}/releases/?environment=production").status_code == 403
    assert bot.get(f"{P}/releases/").json() == []  # only staging's
    r = bot.post(f"{P}/releases/", {**BODY, "environment": "staging", "metrics": []}, format="json")
    assert r.status_code == 201, r.content
    assert [x["environment"] for x in bot.get(f"{P}/releases/").json()] == ["staging"]
    assert Release.objects.get(pk=rid).status == ReleaseStatus.RUNNING


def test_keys_without_the_scope_or_of_another_project_are_refused(
    project, created, django_user_model
):
    reader = key_client(project, scopes=("read", "evaluate", "assign", "ingest"), name="reader")
    assert reader.get(f"{P}/releases/").status_code == 403
    r = reader.post(f"{P}/releases/{created['id']}/rollback")
    assert r.status_code == 403 and "'release' scope" in r.json()["detail"]
    owner = django_user_model.objects.create_user("olga", "o@example.com", "pw-o-12345")
    other = project_create(slug="other", name="Other", owner=owner)
    stranger = key_client(other, name="stranger")
    assert stranger.get(f"{P}/releases/{created['id']}/").status_code == 404
    assert stranger.post(f"{P}/releases/{created['id']}/rollback").status_code == 404
    assert Release.objects.get(pk=created["id"]).status == ReleaseStatus.RUNNING


# -- moves ----------------------------------------------------------------------------------


def test_each_move_answers_the_release(api, created):
    url = f"{P}/releases/{created['id']}"
    r = api.post(f"{url}/pause", {"reason": "lunch"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    assert r.json()["transitions"][-1]["reason"] == "lunch"
    r = api.post(f"{url}/pause")
    assert r.status_code == 400 and r.json()["field"] == "status"
    r = api.post(f"{url}/resume/")
    assert r.status_code == 200 and r.json()["status"] == "running"
    r = api.post(f"{url}/advance", {"reason": "looks fine"}, format="json")
    assert r.status_code == 200, r.content
    assert (r.json()["step"], r.json()["percent"]) == (1, 50)
    assert r.json()["transitions"][-1]["reason"] == "looks fine"
    r = api.post(f"{url}/rollback", {"reason": "x" * 1001}, format="json")
    assert r.status_code == 400 and "reason" in r.json()
    r = api.post(f"{url}/rollback")
    assert r.status_code == 200 and r.json()["status"] == "rolled_back"
    assert r.json()["finished_at"] is not None
    for action in ("pause", "resume", "advance", "rollback", "start"):
        r = api.post(f"{url}/{action}")
        assert r.status_code == 400 and r.json()["field"] == "status", (action, r.content)
    assert api.post(f"{url}/explode").status_code == 404


def test_advancing_past_the_last_step_completes(api, flag, created):
    url = f"{P}/releases/{created['id']}"
    for _ in range(3):
        r = api.post(f"{url}/advance")
        assert r.status_code == 200, r.content
    assert r.json()["status"] == "completed"
    config = FlagEnvironment.objects.get(flag=flag, environment__key="production")
    assert config.default_variation == "on" and config.rules == []


def test_a_scheduled_release_starts_by_hand(api, flag):
    at = (timezone.now() + timedelta(hours=2)).isoformat()
    r = api.post(f"{P}/releases/", {**BODY, "metrics": [], "start_at": at}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "scheduled" and r.json()["started_at"] is None
    r = api.post(f"{P}/releases/{r.json()['id']}/start")
    assert r.status_code == 200 and r.json()["status"] == "running"


# -- checks ---------------------------------------------------------------------------------


def test_checks_are_oldest_first_filtered_and_capped(api, created):
    release = Release.objects.get(pk=created["id"])
    start = release.step_started_at
    ats = [start + timedelta(minutes=m) for m in (1, 2, 3, 4)]
    for at in ats:
        assert release_analyze(release.pk, through=at, now=at) is not None
    url = f"{P}/releases/{release.pk}/checks/"
    checks = api.get(url).json()
    assert [c["at"] for c in checks] == sorted(c["at"] for c in checks) and len(checks) == 4
    assert {"id", "step", "percent", "at", "units", "metrics", "action", "reasons",
            "waits_for", "elapsed_ms"} <= set(checks[0])  # fmt: skip
    assert checks[0]["action"] == "hold" and checks[0]["percent"] == 10
    since = api.get(url, {"since": ats[2].isoformat()}).json()
    assert [c["id"] for c in since] == [c["id"] for c in checks[2:]]
    latest = api.get(url, {"limit": 2}).json()
    assert [c["id"] for c in latest] == [c["id"] for c in checks[2:]]
    before = api.get(url, {"before": ats[1].isoformat()}).json()
    assert [c["id"] for c in before] == [checks[0]["id"]]
    r = api.get(url, {"since": "yesterday"})
    assert r.status_code == 400 and "since" in r.json()
    assert api.get(url, {"limit": 501}).status_code == 400
    detail = api.get(f"{P}/releases/{release.pk}/").json()
    assert detail["decision"]["at"] == ats[-1].isoformat()


# -- schema --------------------------------------------------------------------------------


def test_the_schema_types_the_releases_api(tmp_path):
    out = tmp_path / "schema.json"
    call_command("spectacular", "--file", str(out), "--format", "openapi-json")
    schema = json.loads(out.read_text())
    components = schema["components"]["schemas"]
    paths = schema["paths"]

    def ref(node):
        node = node.get("items", node)
        return components[node["$ref"].rsplit("/", 1)[1]]

    base = "/api/v1/projects/{project}/releases/"
    release = ref(paths[base + "{release_id}/"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"])  # fmt: skip
    assert set(release["properties"]) >= RELEASE_FIELDS
    created = paths[base]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert ref(created) == release
    body = ref(paths[base]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert {"flag", "environment", "variation", "steps", "metrics"} <= set(body["properties"])
    assert set(body["required"]) == {"flag", "environment", "variation"}
    action = base + "{release_id}/{action}/"
    assert set(paths[action]["post"]["parameters"][0]["schema"]["enum"]) >= {
        "pause", "resume", "advance", "rollback",
    }  # fmt: skip
    assert "checks/" in "".join(paths)
    security = {next(iter(s)) for s in paths[base]["get"]["security"]}
    assert "ApiKeyAuth" in security
