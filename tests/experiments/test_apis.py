"""The user API: every endpoint for every role (allowed and denied), cross-project access,
validation messages, the power calculator and the OpenAPI schema."""

import math

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from experiments.models import AuditLog, Role
from experiments.services import api_key_create, metric_create, project_create
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db

E = "/api/v1/projects/shop/experiments"
M = "/api/v1/projects/shop/metrics"

# (name, method, path, body, permission): permission is what the role table must grant.
ENDPOINTS = [
    ("list experiments", "get", f"{E}/", None, "read"),
    ("read experiment", "get", f"{E}/checkout-v2/", None, "read"),
    ("audit log", "get", f"{E}/checkout-v2/audit-log/", None, "read"),
    ("create experiment", "post", f"{E}/", experiment_payload("new-one"), "edit"),
    ("update experiment", "patch", f"{E}/checkout-v2/", {"name": "Renamed"}, "edit"),
    ("delete draft", "delete", f"{E}/checkout-v2/", None, "edit"),
    ("start", "post", f"{E}/checkout-v2/start", None, "edit"),
    ("pause", "post", f"{E}/live-one/pause", None, "edit"),
    ("ramp", "post", f"{E}/live-one/ramp", {"coverage": 0.8}, "edit"),
    ("conclude", "post", f"{E}/live-one/conclude", {"decision": "treatment"}, "edit"),
    ("rollback", "post", f"{E}/live-one/rollback", {"reason": "bug"}, "edit"),
    ("list metrics", "get", f"{M}/", None, "read"),
    ("read metric", "get", f"{M}/purchase/", None, "read"),
    ("create metric", "post", f"{M}/", {"key": "m2", "name": "M2", "event_name": "e"}, "edit"),
    ("update metric", "patch", f"{M}/purchase/", {"name": "Purchases"}, "edit"),
    ("delete metric", "delete", f"{M}/unused/", None, "edit"),
    ("list members", "get", "/api/v1/projects/shop/members/", None, "manage"),
    (
        "add member",
        "post",
        "/api/v1/projects/shop/members/",
        {"username": "zed", "role": "viewer", "password": "a-long-password-1"},
        "manage",
    ),
    ("change role", "patch", "/api/v1/projects/shop/members/alice/", {"role": "admin"}, "manage"),
    ("list api keys", "get", "/api/v1/projects/shop/api-keys/", None, "manage"),
    (
        "create api key",
        "post",
        "/api/v1/projects/shop/api-keys/",
        {"name": "svc2", "scopes": ["assign"]},
        "manage",
    ),
    ("revoke api key", "delete", "/api/v1/projects/shop/api-keys/{key_id}/", None, "manage"),
]
GRANTS = {
    Role.ADMIN: {"read", "edit", "manage"},
    Role.EDITOR: {"read", "edit"},
    Role.ANALYST: {"read"},
    Role.VIEWER: {"read"},
}


@pytest.fixture
def world(project, metrics):
    """A draft, a running experiment, an unused metric and an API key in project 'shop'."""
    from experiments.services import experiment_create

    experiment_create(project=project, **experiment_payload())
    running_experiment(project, "live-one", coverage=0.5)
    metric_create(project=project, key="unused", name="Unused", event_name="nothing")
    key = api_key_create(project=project, name="svc", scopes=["read"])
    return {"key_id": key.api_key.pk}


def call(client, method, path, body, world):
    return getattr(client, method)(path.format(**world), body, format="json")


@pytest.fixture
def people(world, make_member, django_user_model):
    """One member per role, and mallory: the admin of another project."""
    users = {role: make_member(f"user-{role}", role) for role in GRANTS}
    mallory = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    project_create(slug="evil", name="Evil", owner=mallory)
    return users, mallory


def call_and_undo(user, method, path, body, world):
    """Call as `user`, then roll the database back so every caller sees the same state."""
    client = APIClient()
    client.force_authenticate(user)
    with transaction.atomic():
        response = call(client, method, path, body, world)
        transaction.set_rollback(True)
    return response


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "permission"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS]
)
def test_every_endpoint_checks_the_role(world, people, name, method, path, body, permission):
    users, mallory = people
    for role, user in users.items():
        r = call_and_undo(user, method, path, body, world)
        if permission in GRANTS[role]:
            assert r.status_code in (200, 201, 204), (name, role, r.content)
        else:
            assert r.status_code == 403, (name, role, r.content)
            assert "may not" in r.json()["detail"]
    # An admin of another project learns nothing about 'shop', not even that it exists.
    assert call_and_undo(mallory, method, path, body, world).status_code == 404, name


def test_unknown_project_is_404_like_a_foreign_one(api):
    assert api.get("/api/v1/projects/nope/experiments/").status_code == 404


def test_anonymous_is_refused(world):
    assert APIClient().get(f"{E}/").status_code in (401, 403)


def test_a_service_api_key_cannot_use_the_people_api(world, service_secret):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {service_secret}")
    assert client.get(f"{E}/").status_code in (401, 403)
    r = client.post(f"{E}/", experiment_payload("sneaky"), format="json")
    assert r.status_code in (401, 403)


def test_project_list_shows_only_my_projects(world, django_user_model, make_member):
    mallory = django_user_model.objects.create_user("mallory", "m@example.com", "pw-123456")
    project_create(slug="evil", name="Evil", owner=mallory)
    client = APIClient()
    client.force_authenticate(make_member("vic", Role.VIEWER))
    assert [p["slug"] for p in client.get("/api/v1/projects/").json()] == ["shop"]


# --- the definition round trip ----------------------------------------------------------------


def test_create_and_start_experiment(api, project, metrics):
    payload = experiment_payload(
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "guardrail", "non_inferiority_margin": 0.02},
        ],
        targeting={"country": {"$in": ["US"]}},
        ramp_stages=[{"coverage": 0.1, "min_hours": 0}, {"coverage": 0.5, "min_hours": 0}],
        planned_sample_size=20000,
        mde=0.05,
    )
    r = api.post(f"{E}/", payload, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "draft" and body["owner"] == "alice"
    assert [v["key"] for v in body["variants"]] == ["control", "treatment"]
    assert body["metrics"][1] == {
        "metric": "revenue",
        "role": "guardrail",
        "non_inferiority_margin": 0.02,
    }
    r = api.post(f"{E}/checkout-v2/start")
    assert r.status_code == 200 and r.json()["status"] == "running"
    assert r.json()["coverage"] == 0.1
    r = api.post(f"{E}/checkout-v2/ramp", {"coverage": 0.5}, format="json")
    assert r.status_code == 200 and r.json()["coverage"] == 0.5
    r = api.post(f"{E}/checkout-v2/conclude", {"decision": "treatment"}, format="json")
    assert r.json()["status"] == "concluded" and r.json()["decision_variant"] == "treatment"


def test_bad_weights_are_a_400_naming_the_field(api, project, metrics):
    payload = experiment_payload(
        variants=[
            {"key": "control", "weight": 0.9, "is_control": True},
            {"key": "t", "weight": 0.9},
        ]
    )
    r = api.post(f"{E}/", payload, format="json")
    assert r.status_code == 400 and "sum to 1.8" in str(r.json()["variants"])


def test_targeting_regex_re2_cannot_run_is_a_400_naming_targeting(api, project, metrics):
    """Backreferences, lookaround and over-long patterns are refused when saved, so the server
    (RE2, linear time) and the SDKs never disagree about a stored pattern."""
    for pattern in [r"(a)\1", "^(?!admin)", "a" * 501]:
        r = api.post(
            f"{E}/", experiment_payload(targeting={"email": {"$regex": pattern}}), format="json"
        )
        assert r.status_code == 400, r.content
        assert "targeting" in r.json(), r.json()
    r = api.post(
        f"{E}/", experiment_payload(targeting={"email": {"$regex": "(a+)+$"}}), format="json"
    )
    assert r.status_code == 201, r.content


def test_bad_targeting_is_a_400_naming_targeting(api, project, metrics):
    r = api.post(f"{E}/", experiment_payload(targeting={"age": {"$gt": []}}), format="json")
    assert r.status_code == 400 and "targeting" in r.json()
    r = api.post(f"{E}/", experiment_payload(targeting=["not", "an", "object"]), format="json")
    assert r.status_code == 400 and "targeting" in r.json()


def test_bad_targeting_on_update_is_a_400(api, project, metrics):
    api.post(f"{E}/", experiment_payload(), format="json")
    r = api.patch(f"{E}/checkout-v2/", {"targeting": {"$or": "x"}}, format="json")
    assert r.status_code == 400 and "targeting" in r.json()


def test_bad_layer_range_is_a_400(api, project, metrics):
    payload = experiment_payload(layer="l", layer_start=0.7, layer_end=0.2)
    r = api.post(f"{E}/", payload, format="json")
    assert r.status_code == 400 and "layer" in r.json()


def test_lifecycle_rule_is_a_400_with_message(api, project, metrics):
    api.post(f"{E}/", experiment_payload(), format="json")
    r = api.post(f"{E}/checkout-v2/pause")
    assert r.status_code == 400 and "Cannot pause" in r.json()["detail"]
    assert r.json()["field"] == "status"


def test_frozen_weights_are_a_400_with_message(api, project, metrics):
    running_experiment(project)
    r = api.patch(
        f"{E}/checkout-v2/",
        {
            "variants": [
                {"key": "control", "weight": 0.2, "is_control": True},
                {"key": "treatment", "weight": 0.8},
            ]
        },
        format="json",
    )
    assert r.status_code == 400 and "frozen" in r.json()["detail"]


def test_coverage_down_is_a_400(api, project, metrics):
    running_experiment(project, coverage=0.5)
    r = api.post(f"{E}/checkout-v2/ramp", {"coverage": 0.1}, format="json")
    assert r.status_code == 400 and "only go up" in r.json()["detail"]


def test_metric_in_use_delete_is_a_400(api, project, metrics):
    running_experiment(project)
    r = api.delete(f"{M}/purchase/")
    assert r.status_code == 400 and "used by" in r.json()["detail"]


def test_list_filters_by_status_and_text(api, project, metrics):
    api.post(f"{E}/", experiment_payload("alpha-test", name="Pricing page"), format="json")
    running_experiment(project, "beta-test")
    assert [e["key"] for e in api.get(f"{E}/?status=running").json()] == ["beta-test"]
    assert [e["key"] for e in api.get(f"{E}/?q=pricing").json()] == ["alpha-test"]


def test_audit_log_lists_changes_newest_first(api, project, metrics):
    running_experiment(project)
    rows = api.get(f"{E}/checkout-v2/audit-log/").json()
    assert [r["action"] for r in rows][:2] == ["experiment.start", "experiment.create"]
    assert rows[0]["before"]["status"] == "draft" and rows[0]["after"]["status"] == "running"


def test_member_api_adds_changes_and_removes(api, project):
    r = api.post(
        "/api/v1/projects/shop/members/",
        {"username": "dora", "role": "analyst", "password": "a-long-password-1"},
        format="json",
    )
    assert r.status_code == 201 and r.json() == {"username": "dora", "role": "analyst"}
    r = api.patch("/api/v1/projects/shop/members/dora/", {"role": "editor"}, format="json")
    assert r.json()["role"] == "editor"
    assert api.delete("/api/v1/projects/shop/members/dora/").status_code == 204
    r = api.delete("/api/v1/projects/shop/members/alice/")
    assert r.status_code == 400 and "only admin" in r.json()["detail"]


def test_api_key_secret_is_returned_once(api, project):
    r = api.post(
        "/api/v1/projects/shop/api-keys/", {"name": "c", "scopes": ["ingest"]}, format="json"
    )
    assert r.status_code == 201 and r.json()["secret"].startswith("abk_")
    listed = api.get("/api/v1/projects/shop/api-keys/").json()
    assert all("secret" not in k and "hashed_secret" not in k for k in listed)
    assert AuditLog.objects.filter(action="api_key.create", target="c").exists()


def test_api_keys_belong_to_an_environment(api, project):
    r = api.post(
        "/api/v1/projects/shop/api-keys/",
        {"name": "s", "scopes": ["evaluate"], "environment": "staging"},
        format="json",
    )
    assert r.status_code == 201 and r.json()["environment"] == "staging"
    r = api.post(
        "/api/v1/projects/shop/api-keys/", {"name": "p", "scopes": ["read"]}, format="json"
    )
    assert r.json()["environment"] == "production"
    r = api.post(
        "/api/v1/projects/shop/api-keys/",
        {"name": "m", "scopes": ["read"], "environment": "moon"},
        format="json",
    )
    assert r.status_code == 400 and r.json()["field"] == "environment"
    listed = {
        k["name"]: k["environment"] for k in api.get("/api/v1/projects/shop/api-keys/").json()
    }
    assert listed == {"s": "staging", "p": "production"}


# --- power calculator ----------------------------------------------------------------------


def test_power_binomial_sample_size_and_duration(api):
    r = api.get(
        "/api/v1/power",
        {
            "kind": "binomial",
            "baseline": 0.1,
            "mde": 0.05,
            "alpha": 0.05,
            "daily_units": 2000,
            "method": "fixed",
        },
    )
    assert r.status_code == 200, r.content
    body = r.json()
    # Two-sided z-test for 10% -> 10.5%, 80% power: 57,760 per arm (statsmodels NormalIndPower
    # with Cohen's h gives 57,76x); abacus uses the unpooled variance: 60,656 per arm.
    assert body["per_arm"] == 60656 and body["total"] == 121312
    assert body["days"] == pytest.approx(121312 / 2000)
    assert body["inflation"] == 1.0


def test_power_sequential_costs_more_than_fixed(api):
    params = {"kind": "mean", "baseline": 10, "variance": 100, "mde": 0.05, "daily_units": 1000}
    gs = api.get("/api/v1/power", {**params, "method": "group_sequential"}).json()
    seq = api.get("/api/v1/power", {**params, "method": "sequential"}).json()
    assert 1 < gs["inflation"] < seq["inflation"]
    assert gs["fixed_total"] < gs["total"] < seq["total"]


def test_power_splits_alpha_over_primaries_and_arms(api):
    params = {"kind": "binomial", "baseline": 0.2, "mde": 0.1, "method": "fixed"}
    one = api.get("/api/v1/power", params).json()
    more = api.get("/api/v1/power", {**params, "variants": 3, "primary_metrics": 2}).json()
    assert more["alpha_per_test"] == pytest.approx(0.05 / 2 / 2)
    assert more["per_arm"] > one["per_arm"] and more["total"] == 3 * more["per_arm"]


def test_power_mde_from_a_sample_size(api):
    r = api.get(
        "/api/v1/power",
        {"kind": "binomial", "baseline": 0.1, "sample_size": 121312, "method": "fixed"},
    )
    assert r.json()["mde"] == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "binomial", "baseline": 1.5, "mde": 0.05}, "baseline"),
        ({"kind": "mean", "baseline": 10, "mde": 0.05}, "variance"),
        ({"kind": "binomial", "baseline": 0.1}, "mde"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "method": "magic"}, "method"),
    ],
)
def test_power_bad_input_is_a_400_naming_the_field(api, params, field):
    r = api.get("/api/v1/power", params)
    assert r.status_code == 400 and field in r.json()


def test_power_uneven_split_reports_per_arm_sizes_against_statsmodels(api):
    """90/10 (control first), relative MDE 2.5% of 20 (D = 0.5), sd 4. The relative test's
    variance with n_c control units is V / n_c, V = s^2 / r + s^2 (1 + mde)^2 at r = 1/9
    (power.py); NormalIndPower with effect size D / sqrt(V / 2) and ratio 1 solves for n_c."""
    from statsmodels.stats.power import NormalIndPower

    params = {"kind": "mean", "baseline": 20, "variance": 16, "mde": 0.025, "method": "fixed"}
    even = api.get("/api/v1/power", params).json()
    uneven = api.get("/api/v1/power", {**params, "weights": "0.9,0.1"})
    assert uneven.status_code == 200, uneven.content
    body = uneven.json()
    v = 16 * 9 + 16 * 1.025**2
    ref = NormalIndPower().solve_power(effect_size=0.5 / math.sqrt(v / 2), alpha=0.05, power=0.8)
    assert body["arms"] == [math.ceil(ref), math.ceil(ref / 9)]
    assert body["total"] == sum(body["arms"]) and body["weights"] == pytest.approx([0.9, 0.1])
    assert even["arms"] == [even["per_arm"]] * 2
    # About (1/0.9 + 1/0.1) / (1/0.5 + 1/0.5) = 2.78; for a relative lift the control's share
    # of the variance is scaled by (1 + mde)^2: (1.025^2/0.9 + 10) / (1.025^2/0.5 + 2) = 2.72.
    k = 1.025**2
    assert body["total"] / even["total"] == pytest.approx((k / 0.9 + 10) / (k / 0.5 + 2), rel=1e-3)


def test_power_three_arms_with_weights_and_a_control_that_is_not_first(api):
    params = {"kind": "binomial", "baseline": 0.2, "mde": 0.1, "method": "fixed"}
    r = api.get("/api/v1/power", {**params, "weights": "0.3,0.4,0.3", "control": 1})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["alpha_per_test"] == pytest.approx(0.025) and body["control"] == 1
    assert body["arms"][0] == body["arms"][2] and body["total"] == sum(body["arms"])


def test_power_defaults_to_the_pipelines_100_looks(api):
    """The analysis counts a look per 1% of information, so the calculator plans for 100
    (before: 5, which understated the group-sequential sample)."""
    params = {"kind": "binomial", "baseline": 0.1, "mde": 0.05, "method": "group_sequential"}
    default = api.get("/api/v1/power", params).json()
    five = api.get("/api/v1/power", {**params, "looks": 5}).json()
    assert default["looks"] == 100 and five["looks"] == 5
    assert five["fixed_total"] < five["total"] < default["total"]


def test_power_duration_through_the_ramp_plan(api):
    """Fixed design, 10% -> 10.5%: 121,312 units. 48,000 units a day at full coverage:
    5% for 24 h (2,400 units), 50% for 48 h (48,000; 50,400 in all), then 100%:
    (121,312 - 50,400) / 48,000 = 1.47733 more days, 4.47733 days in all (by hand)."""
    params = {"kind": "binomial", "baseline": 0.1, "mde": 0.05, "method": "fixed"}
    r = api.get("/api/v1/power", {**params, "daily_units": 48000, "ramp": "0.05:24,0.5:48,1:0"})
    assert r.status_code == 200, r.content
    assert r.json()["total"] == 121312
    assert r.json()["days"] == pytest.approx(3 + (121312 - 50400) / 48000)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "binomial", "baseline": 0.96, "mde": 0.05}, "mde"),
        (
            {"kind": "binomial", "baseline": 0.96, "sample_size": 10, "method": "fixed"},
            "sample_size",
        ),
        ({"kind": "mean", "baseline": 10, "variance": 0, "mde": 0.05}, "variance"),
        ({"kind": "mean", "baseline": 10, "variance": -4, "mde": 0.05}, "variance"),
        ({"kind": "binomial", "baseline": 0, "mde": 0.05}, "baseline"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "weights": "0.9,0"}, "weights"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "weights": "a,b"}, "weights"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "weights": "1"}, "weights"),
        (
            {"kind": "binomial", "baseline": 0.1, "mde": 0.05, "weights": "1,1,1", "variants": 2},
            "weights",
        ),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "control": 2}, "control"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "alpha": 0.7}, "alpha"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "power": 1.2}, "power"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "looks": 0}, "looks"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "looks": 1000}, "looks"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "ramp": "2:24"}, "ramp"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "ramp": "0.1"}, "ramp"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "ramp": "0.1:-1"}, "ramp"),
        ({"kind": "binomial", "baseline": 0.1, "mde": 0.05, "ramp": ":"}, "ramp"),  # was a 500
        ({"kind": "binomial", "baseline": "nan", "mde": 0.05}, "baseline"),
    ],
)
def test_power_impossible_input_is_a_400_naming_the_field(api, params, field):
    r = api.get("/api/v1/power", params)
    assert r.status_code == 400, r.content
    assert field in r.json(), r.json()
    assert all(isinstance(m, str) and m for m in r.json()[field])


def test_power_explains_why_0_96_plus_5_percent_is_impossible(api):
    r = api.get("/api/v1/power", {"kind": "binomial", "baseline": 0.96, "mde": 0.05})
    message = r.json()["mde"][0]
    assert "1.008" in message and "+4.17%" in message


def test_power_needs_a_login():
    assert APIClient().get("/api/v1/power", {"baseline": 0.1, "mde": 0.1}).status_code in (
        401,
        403,
    )


# --- schema --------------------------------------------------------------------------------


def test_openapi_schema_lists_the_definition_endpoints(api):
    r = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/v1/projects/{project}/experiments/",
        "/api/v1/projects/{project}/experiments/{key}/",
        "/api/v1/projects/{project}/experiments/{key}/audit-log/",
        "/api/v1/projects/{project}/metrics/{key}/",
        "/api/v1/projects/{project}/members/{username}/",
        "/api/v1/power",
    ):
        assert path in paths, path
    assert api.get("/api/v1/docs/").status_code == 200


def test_conversion_window_beyond_a_year_is_a_400_naming_it(api, project):
    """2,000,000,000 hours was accepted and then broke every analysis of the metric."""
    body = {"key": "late", "name": "Late", "kind": "count", "event_name": "visit"}
    r = api.post(f"{M}/", {**body, "conversion_window_hours": 2_000_000_000}, format="json")
    assert r.status_code == 400 and "conversion_window_hours" in r.json()
    assert "8760" in str(r.json()["conversion_window_hours"])
    r = api.post(f"{M}/", {**body, "conversion_window_hours": 8760}, format="json")
    assert r.status_code == 201 and r.json()["conversion_window_hours"] == 8760
    r = api.patch(f"{M}/late/", {"conversion_window_hours": 8761}, format="json")
    assert r.status_code == 400 and "conversion_window_hours" in r.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [("planned_sample_size", 10**9 + 1), ("mde", 10.5)],
)
def test_experiment_numbers_out_of_range_are_a_400_naming_the_field(
    api, project, metrics, field, value
):
    r = api.post(f"{E}/", experiment_payload(**{field: value}), format="json")
    assert r.status_code == 400 and field in r.json()


def test_ramp_stage_hours_beyond_a_year_are_a_400_naming_ramp_stages(api, project, metrics):
    stages = [{"coverage": 0.1, "min_hours": 10**9}, {"coverage": 1.0}]
    r = api.post(f"{E}/", experiment_payload(ramp_stages=stages), format="json")
    assert r.status_code == 400 and "ramp_stages" in r.json()
