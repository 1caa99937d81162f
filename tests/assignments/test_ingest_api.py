"""POST /api/v1/events over HTTP: limits (413), malformed bodies (400), keys, scopes, projects."""

import json

import pytest

from assignments.models import MetricEvent
from assignments.services import MAX_BATCH
from experiments.services import api_key_create, api_key_revoke, project_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
TS = "2026-11-29T10:00:00Z"


def _metric(i):
    return {
        "event_id": f"m{i}",
        "type": "metric",
        "name": "purchase",
        "unit_id": f"u{i}",
        "timestamp": TS,
    }


def _post(client, body, secret=None, **headers):
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        "/api/v1/events", data=data, content_type="application/json", headers=headers
    )


def test_batch_over_the_limit_is_413_naming_it(project, service_secret, client):
    r = _post(client, {"events": [_metric(i) for i in range(MAX_BATCH + 1)]}, service_secret)
    assert r.status_code == 413
    assert r.json()["field"] == "events" and "10,000" in r.json()["detail"]
    assert not MetricEvent.objects.exists()


def test_batch_at_the_limit_is_accepted(project, service_secret, client):
    r = _post(client, {"events": [_metric(i) for i in range(MAX_BATCH)]}, service_secret)
    assert r.status_code == 202 and r.json()["accepted"] == MAX_BATCH


def test_body_over_the_size_limit_is_413_json_naming_it(project, service_secret, client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = _post(client, {"events": [_metric(i) for i in range(50)]}, service_secret)
    assert r.status_code == 413 and r["Content-Type"] == "application/json"
    assert r.json()["field"] == "body" and "1,000 bytes" in r.json()["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ("{not json", "body"),
        (b"\xff\xfe", "body"),
        ("", "body"),
        ("[1, 2]", "body"),
        ('{"events": "x"}', "events"),
        ('{"events": {"a": 1}}', "events"),
        ('{"nothing": []}', "events"),
    ],
)
def test_malformed_bodies_are_400_with_a_message(project, service_secret, client, body, field):
    r = _post(client, body, service_secret)
    assert r.status_code == 400, r.content
    assert r.json()["field"] == field and r.json()["detail"]


def test_deeply_nested_json_is_a_400_not_a_500(project, service_secret, client):
    r = _post(client, '{"events": ' + "[" * 100_000 + "]" * 100_000 + "}", service_secret)
    assert r.status_code == 400


def test_wrongly_typed_events_are_rejected_entries_not_errors(project, service_secret, client):
    events = [None, 1, "x", [], {"event_id": {"a": 1}}, {"event_id": "e", "type": None}]
    r = _post(client, {"events": events}, service_secret)
    assert r.status_code == 202
    assert [x["index"] for x in r.json()["rejected"]] == list(range(len(events)))


def test_nan_from_a_lenient_json_encoder_is_rejected(project, service_secret, client):
    body = '{"events": [{"event_id": "m", "type": "metric", "name": "p", "unit_id": "u",'
    body += f' "timestamp": "{TS}", "value": NaN}}]}}'
    r = _post(client, body, service_secret)
    assert r.status_code == 202 and r.json()["rejected"][0]["field"] == "value"


def test_key_without_ingest_scope_is_forbidden(project, client):
    secret = api_key_create(project=project, name="assign-only", scopes=["assign"]).secret
    r = _post(client, {"events": [_metric(1)]}, secret)
    assert r.status_code == 403 and "ingest" in r.json()["detail"]
    assert not MetricEvent.objects.exists()


def test_revoked_key_is_unauthorized(project, client):
    created = api_key_create(project=project, name="old", scopes=["ingest"])
    api_key_revoke(api_key=created.api_key)
    assert _post(client, {"events": [_metric(1)]}, created.secret).status_code == 401


def test_missing_key_is_unauthorized(project, client):
    assert _post(client, {"events": [_metric(1)]}).status_code in (401, 403)


def test_the_key_fixes_the_project(project, metrics, admin_user, client):
    running_experiment(project)
    other = project_create(slug="other", name="Other", owner=admin_user)
    secret = api_key_create(project=other, name="svc", scopes=["ingest"]).secret
    exposure = {
        "event_id": "x1",
        "type": "exposure",
        "experiment": "checkout-v2",
        "variant": "control",
        "unit_id": "u1",
        "timestamp": TS,
    }
    r = _post(client, {"events": [exposure, _metric(1)]}, secret)
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["field"] == "experiment"
    assert MetricEvent.objects.get().project_id == other.pk


def test_value_beyond_max_event_value_is_rejected_naming_the_bound_and_the_rest_stored(
    project, service_secret, client
):
    """A 1e308 would overflow every later analysis of the event's metrics (sum of squares)."""
    events = [
        {**_metric(0), "value": 12.5},
        {**_metric(1), "value": 1e308},
        {**_metric(2), "value": -2e12},
        {**_metric(3), "value": 10**13},
        {**_metric(4), "value": 1e12},
    ]
    r = _post(client, {"events": events}, service_secret)
    assert r.status_code == 202 and r.json()["accepted"] == 2
    rejected = r.json()["rejected"]
    assert [(x["index"], x["field"]) for x in rejected] == [(i, "value") for i in (1, 2, 3)]
    for x in rejected:
        assert "1e+12" in x["message"] and "ABACUS_MAX_EVENT_VALUE" in x["message"]
    assert sorted(MetricEvent.objects.values_list("value", flat=True)) == [12.5, 1e12]


def test_the_answer_lists_ignored_events_and_keeps_its_keys(
    project, metrics, service_secret, client
):
    """accepted, duplicates and rejected are unchanged; "ignored" names each stored event no
    analysis will count (an exposure before the experiment's phase started)."""
    experiment = running_experiment(project)
    before = (experiment.started_at.timestamp()) - 3600  # epoch seconds are accepted too
    body = {
        "events": [
            {"event_id": "x1", "type": "exposure", "experiment": "checkout-v2",
             "variant": "control", "unit_id": "u1", "timestamp": before},
            _metric(1),
        ]
    }  # fmt: skip
    r = _post(client, body, service_secret)
    assert r.status_code == 202, r.content
    answer = r.json()
    assert answer["accepted"] == 2 and answer["duplicates"] == 0 and answer["rejected"] == []
    assert [(i["index"], i["reason"]) for i in answer["ignored"]] == [(0, "before_phase_start")]
