"""The service API: /assign (sticky), /assign/bulk and /events, with API-key auth."""

import pytest

from assignments.models import Assignment, Exposure, MetricEvent
from experiments.services import api_key_create, experiment_rollback
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
