"""The service API: /assign (sticky), /assign/bulk and /events, with API-key auth."""

import json
import random
import time

import pytest
from growthbook import GrowthBook

from assignments.models import Assignment, Exposure, MetricEvent
from experiments.services import (
    api_key_create,
    experiment_conclude,
    experiment_pause,
    experiment_rollback,
)
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
TS = "2026-11-29T10:00:00Z"


def test_assign_is_sticky_and_stored(project, metrics, service):
    running_experiment(project)
    first = service.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert first.status_code == 200, first.content
    variant = first.json()["assignments"]["checkout-v2"]["variant"]
    assert variant in {"control", "treatment"}
    again = service.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert again.json()["assignments"]["checkout-v2"]["variant"] == variant
    assert Assignment.objects.filter(unit_id="u1").count() == 1


def test_assign_bulk_answers_in_request_order(project, metrics, service):
    running_experiment(project)
    units = [{"unit_id": f"u{i}"} for i in range(50)]
    r = service.post("/api/v1/assign/bulk", {"units": units}, format="json")
    assert r.status_code == 200
    assert [row["unit_id"] for row in r.json()["results"]] == [u["unit_id"] for u in units]


def test_rolled_back_experiment_gives_control_without_storing(project, metrics, service):
    experiment_rollback(experiment=running_experiment(project))
    r = service.post("/api/v1/assign", {"unit_id": "u9"}, format="json")
    assert r.json()["assignments"]["checkout-v2"]["variant"] == "control"
    assert not Assignment.objects.exists()


def test_assign_without_unit_id_names_the_field(project, service):
    r = service.post("/api/v1/assign", {"attributes": {}}, format="json")
    assert r.status_code == 400 and "unit_id" in r.json()


def test_wrong_scope_is_forbidden(project, client):
    secret = api_key_create(project=project, name="ingest-only", scopes=["ingest"]).secret
    r = client.post(
        "/api/v1/assign",
        {"unit_id": "u1"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 403


def test_bad_key_is_unauthorized(client):
    r = client.post(
        "/api/v1/events",
        {"events": []},
        content_type="application/json",
        headers={"Authorization": "Bearer abk_nope_nope"},
    )
    assert r.status_code == 401


def test_events_mixed_batch_stores_valid_and_reports_rejected(project, metrics, service):
    running_experiment(project)
    events = [
        {
            "event_id": "e1",
            "type": "exposure",
            "experiment": "checkout-v2",
            "variant": "treatment",
            "unit_id": "u1",
            "timestamp": TS,
        },
        {
            "event_id": "e2",
            "type": "metric",
            "name": "purchase",
            "unit_id": "u1",
            "value": 12.5,
            "timestamp": TS,
        },
        {
            "event_id": "e3",
            "type": "exposure",
            "experiment": "nope",
            "variant": "x",
            "unit_id": "u1",
            "timestamp": TS,
        },
        {
            "event_id": "e4",
            "type": "metric",
            "name": "purchase",
            "unit_id": "u1",
            "value": "lots",
            "timestamp": TS,
        },
        {"event_id": "e5", "type": "metric", "name": "purchase", "unit_id": "u1"},
    ]
    r = service.post("/api/v1/events", {"events": events}, format="json")
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert [(x["index"], x["field"]) for x in body["rejected"]] == [
        (2, "experiment"),
        (3, "value"),
        (4, "timestamp"),
    ]
    assert Exposure.objects.count() == 1 and MetricEvent.objects.count() == 1
    retry = service.post("/api/v1/events", {"events": events[:2]}, format="json").json()
    assert retry["accepted"] == 0 and retry["duplicates"] == 2
    assert MetricEvent.objects.count() == 1


def test_events_body_must_hold_a_list(service):
    r = service.post("/api/v1/events", {"events": "x"}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "events"


def test_features_payload_has_etag_and_experiment(project, metrics, client):
    running_experiment(project)
    r = client.get(f"/api/features/{project.client_key}")
    assert r.status_code == 200 and "checkout-v2" in r.json()["features"]
    assert (
        client.get(
            f"/api/features/{project.client_key}", headers={"If-None-Match": r["ETag"]}
        ).status_code
        == 304
    )


# --- /assign input checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"unit_id": ""}, "unit_id"),
        ({"unit_id": None}, "unit_id"),
        ({"unit_id": ["u"]}, "unit_id"),
        ({"unit_id": "u" * 201}, "unit_id"),
        ({"unit_id": "a\x00"}, "unit_id"),
        ({"unit_id": "u1", "attributes": [1]}, "attributes"),
        ({"unit_id": "u1", "experiments": "checkout-v2"}, "experiments"),
        ({"unit_id": "u1", "experiments": [1]}, "experiments"),
    ],
)
def test_assign_rejects_wrong_types_with_the_field(project, metrics, service, body, field):
    running_experiment(project)
    r = service.post("/api/v1/assign", body, format="json")
    assert r.status_code == 400 and field in r.json()
    assert not Assignment.objects.exists()


def test_assign_accepts_an_integer_unit_id_as_its_string(project, metrics, service):
    running_experiment(project)
    a = service.post("/api/v1/assign", {"unit_id": 42}, format="json").json()
    b = service.post("/api/v1/assign", {"unit_id": "42"}, format="json").json()
    assert a == b and a["unit_id"] == "42"


def test_assign_malformed_json_is_400(project, service):
    r = service.generic("POST", "/api/v1/assign", "{oops", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_assign_unknown_experiment_is_400_naming_it(project, metrics, service):
    running_experiment(project)
    r = service.post("/api/v1/assign", {"unit_id": "u1", "experiments": ["nope"]}, format="json")
    assert r.status_code == 400 and "nope" in r.json()["detail"]


def test_assign_bulk_limits_and_item_errors(project, metrics, service):
    running_experiment(project)
    too_many = {"units": [{"unit_id": f"u{i}"} for i in range(1001)]}
    assert service.post("/api/v1/assign/bulk", too_many, format="json").status_code == 413
    r = service.post(
        "/api/v1/assign/bulk", {"units": [{"unit_id": "a"}, {"unit_id": ""}]}, format="json"
    )
    assert r.status_code == 400 and "units[1].unit_id" in r.json()
    assert service.post("/api/v1/assign/bulk", {"units": []}, format="json").status_code == 400
    r = service.post("/api/v1/assign/bulk", {"units": ["u1"]}, format="json")
    assert r.status_code == 400 and "units[0]" in r.json()


def test_assign_bulk_equals_single_calls(project, metrics, service):
    running_experiment(project, coverage=0.6)
    running_experiment(project, "pricing", targeting={"plan": "pro"})
    units = [
        {"unit_id": f"u{i}", "attributes": {"plan": ["pro", "free"][i % 2]}} for i in range(80)
    ]
    bulk = service.post("/api/v1/assign/bulk", {"units": units}, format="json").json()["results"]
    Assignment.objects.all().delete()
    single = [service.post("/api/v1/assign", u, format="json").json() for u in units]
    assert bulk == single


def test_assign_key_of_another_project_sees_only_its_experiments(project, metrics, admin_user):
    from rest_framework.test import APIClient

    from experiments.services import project_create

    running_experiment(project)
    other = project_create(slug="other", name="Other", owner=admin_user)
    client = APIClient()
    secret = api_key_create(project=other, name="svc", scopes=["assign"]).secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post("/api/v1/assign", {"unit_id": "u1"}, format="json").json() == {
        "unit_id": "u1",
        "assignments": {},
    }


# --- features payload --------------------------------------------------------------------------


def test_features_payload_follows_the_lifecycle(project, metrics, client):
    experiment = running_experiment(project)
    first = client.get(f"/api/features/{project.client_key}")
    rule = first.json()["features"]["checkout-v2"]["rules"][0]
    assert rule["key"] == "checkout-v2" and rule["hashVersion"] == 2
    experiment_conclude(experiment=experiment, decision="treatment")
    second = client.get(
        f"/api/features/{project.client_key}", headers={"If-None-Match": first["ETag"]}
    )
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert second.json()["features"]["checkout-v2"]["rules"] == [
        {"id": "checkout-v2:shipped", "force": {"v": 2}}
    ]


def test_features_unknown_client_key_is_404(client):
    assert client.get("/api/features/sdk-nope").status_code == 404


def test_features_weak_etag_matches(project, metrics, client):
    running_experiment(project)
    tag = client.get(f"/api/features/{project.client_key}")["ETag"]
    r = client.get(f"/api/features/{project.client_key}", headers={"If-None-Match": f"W/{tag}"})
    assert r.status_code == 304


# --- the GrowthBook SDK, evaluating the served payload locally, agrees with /assign/bulk --------

SDK_UNITS = 100_000


def _sdk_experiments(project):
    third = [0.333333, 0.333333, 0.333334]
    specs = {
        "checkout-v2": {},
        "pricing": {
            "seed": "pricing-1",
            "coverage": 0.3,
            "variants": [
                {"key": "control", "weight": 0.2, "is_control": True, "value": 10},
                {"key": "cheap", "weight": 0.3, "value": 8},
                {"key": "premium", "weight": 0.5, "value": 12},
            ],
        },
        "onboarding": {
            "targeting": {"country": {"$in": ["US", "CA"]}, "age": {"$gte": 18}},
            "variants": [
                {"key": "control", "weight": third[0], "is_control": True, "value": "classic"},
                {"key": "tour", "weight": third[1], "value": "tour"},
                {"key": "tour-b", "weight": third[2], "value": "tour"},  # same value as tour
            ],
        },
        "search-left": {"layer": "search", "layer_start": 0.0, "layer_end": 0.5, "coverage": 0.8},
        "search-right": {
            "layer": "search",
            "layer_start": 0.5,
            "layer_end": 1.0,
            "targeting": {"$or": [{"plan": "pro"}, {"tags": {"$elemMatch": {"$eq": "beta"}}}]},
            "variants": [
                {"key": "control", "weight": 0.7, "is_control": True, "value": "a"},
                {"key": "b", "weight": 0.3, "value": "b"},
            ],
        },
        "paused": {},
        "shipped": {},
        "rolled": {},
    }
    experiments = {key: running_experiment(project, key, **spec) for key, spec in specs.items()}
    experiment_pause(experiment=experiments["paused"])
    experiment_conclude(experiment=experiments["shipped"], decision="treatment")
    experiment_rollback(experiment=experiments["rolled"])
    return list(specs)


def _sdk_units(count):
    rng = random.Random(11)
    units = []
    for _ in range(count):
        attributes = {"plan": rng.choice(["free", "pro"]), "age": rng.choice([16, 18, 30, None])}
        if rng.random() < 0.95:
            attributes["country"] = rng.choice(["US", "CA", "DE", "us"])
        attributes["tags"] = rng.sample(["beta", "vip", "new"], rng.randrange(0, 3))
        units.append({"unit_id": f"{rng.getrandbits(64):016x}", "attributes": attributes})
    return units


@pytest.mark.slow  # 100k units through the API: `make test` and CI run it, test-fast not
def test_sdk_local_evaluation_equals_assign_bulk_for_100k_units(project, metrics, service):
    """Fetch /api/features/<client key>, evaluate it with the official `growthbook` SDK for
    100,000 random units, and compare with /api/v1/assign/bulk (1,000 units a call) over eight
    experiments: weights, coverage, seeds, targeting, a layer, paused, shipped, rolled back."""
    keys = _sdk_experiments(project)
    payload = service.get(f"/api/features/{project.client_key}").json()
    gb = GrowthBook(attributes={}, features=payload["features"])
    seen = {key: set() for key in keys}
    started = time.perf_counter()
    units = _sdk_units(SDK_UNITS)
    for lo in range(0, len(units), 1000):
        chunk = units[lo : lo + 1000]
        r = service.generic(
            "POST",
            "/api/v1/assign/bulk",
            json.dumps({"units": chunk}),
            content_type="application/json",
        )
        assert r.status_code == 200, r.content
        for unit, row in zip(chunk, r.json()["results"], strict=True):
            assert row["unit_id"] == unit["unit_id"]
            gb.set_attributes({**unit["attributes"], "id": unit["unit_id"]})
            for key in keys:
                result = gb.eval_feature(key)
                exp = result.experimentResult
                sdk = exp.key if result.source == "experiment" and exp.inExperiment else None
                ours = row["assignments"].get(key)
                if ours is not None and ours.get("in_experiment") is False:
                    assert sdk is None and result.value == ours["value"], (key, unit)
                    seen[key].add(("all", ours["variant"]))
                    continue
                assert sdk == (ours["variant"] if ours else None), (key, unit)
                if ours:
                    assert result.value == ours["value"], (key, unit)
                seen[key].add(sdk)
    elapsed = time.perf_counter() - started
    print(f"\n{SDK_UNITS:,} units x {len(keys)} experiments compared in {elapsed:.1f}s")
    assert seen["pricing"] == {None, "control", "cheap", "premium"}
    assert seen["onboarding"] == {None, "control", "tour", "tour-b"}
    assert seen["checkout-v2"] == {"control", "treatment"}
    assert seen["search-right"] == {None, "control", "b"}
    assert seen["paused"] == seen["rolled"] == {("all", "control")}
    assert seen["shipped"] == {("all", "treatment")}
    # Every unit in a running experiment got its assignment stored; nobody else did.
    in_running = sum(len(s - {None}) for s in seen.values())
    assert in_running and Assignment.objects.exclude(experiment__status="running").count() == 0


def test_admin_shows_the_tables_read_only(project, metrics, service, admin_user, client):
    running_experiment(project)
    service.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    for name in ("assignment", "exposure", "metricevent"):
        assert client.get(f"/admin/assignments/{name}/").status_code == 200
        assert client.get(f"/admin/assignments/{name}/add/").status_code == 403
    row = Assignment.objects.get()
    page = client.get(f"/admin/assignments/assignment/{row.pk}/change/")
    assert page.status_code == 200 and b"Save" not in page.content
