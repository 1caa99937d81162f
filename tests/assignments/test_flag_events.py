"""Flag exposure events in POST /api/v1/events: validated against the project's flags, stored
idempotently by (project, event_id) across all three event types, counted in the usage."""

from datetime import UTC, date, datetime

import pytest
from rest_framework.test import APIClient

from assignments.models import Exposure, FlagExposure, MetricEvent
from assignments.services import events_ingest
from experiments.models import Environment
from experiments.services import api_key_create
from flags.models import FlagUsage
from flags.services import flag_create, flag_update
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
TS = "2026-11-29T10:00:00Z"


def flag_exposure(event_id="f1", unit_id="u1", flag="new-nav", variation="on", **fields):
    event = {
        "event_id": event_id,
        "type": "exposure",
        "flag": flag,
        "variation": variation,
        "unit_id": unit_id,
        "timestamp": TS,
    }
    event.update(fields)
    return event


def metric(event_id="m1", unit_id="u1"):
    return {
        "event_id": event_id,
        "type": "metric",
        "name": "purchase",
        "unit_id": unit_id,
        "timestamp": TS,
    }


def experiment_exposure(event_id="x1", unit_id="u1"):
    return {
        "event_id": event_id,
        "type": "exposure",
        "experiment": "checkout-v2",
        "variant": "treatment",
        "unit_id": unit_id,
        "timestamp": TS,
    }


@pytest.fixture
def flag(project):
    return flag_create(project=project, key="new-nav", name="New navigation")


def client_for(project, environment="production", scopes=("ingest",)):
    secret = api_key_create(
        project=project, name=f"svc-{environment}", scopes=scopes, environment=environment
    ).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_flag_exposure_is_stored_in_the_keys_environment(project, flag):
    r = client_for(project, "staging").post(
        "/api/v1/events", {"events": [flag_exposure()]}, format="json"
    )
    assert r.status_code == 202, r.content
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == []
    stored = FlagExposure.objects.get(event_id="f1")
    assert (stored.flag_id, stored.variation, stored.unit_id) == (flag.pk, "on", "u1")
    assert stored.environment.key == "staging" and stored.project_id == project.pk
    assert stored.ts == datetime(2026, 11, 29, 10, tzinfo=UTC)


def test_without_an_environment_flag_exposures_go_to_production(project, flag):
    assert events_ingest(project=project, events=[flag_exposure()]).accepted == 1
    assert FlagExposure.objects.get().environment.key == "production"


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (flag_exposure(flag="nope"), "flag", "Unknown flag 'nope'"),
        (flag_exposure(flag=7), "flag", "must be a string"),
        (flag_exposure(flag=""), "flag", "must not be empty"),
        (flag_exposure(variation="purple"), "variation", "no variation 'purple'"),
        ({**flag_exposure(), "variation": None}, "variation", "required"),
        (flag_exposure(variation=["on"]), "variation", "must be a string"),
        (flag_exposure(unit_id=""), "unit_id", "must not be empty"),
        (flag_exposure(timestamp="yesterday"), "timestamp", "ISO 8601"),
    ],
)
def test_invalid_flag_exposures_are_rejected_naming_the_field(project, flag, event, field, message):
    result = events_ingest(project=project, events=[metric(), event])
    assert result.accepted == 1
    [rejected] = result.rejected
    assert (rejected["index"], rejected["field"]) == (1, field)
    assert message in rejected["message"]
    assert not FlagExposure.objects.exists()


def test_a_flag_of_another_project_is_unknown(project, flag, admin_user):
    from experiments.services import project_create

    other = project_create(slug="other", name="Other", owner=admin_user)
    [rejected] = events_ingest(project=other, events=[flag_exposure()]).rejected
    assert rejected["field"] == "flag"


def test_an_archived_flag_still_takes_late_exposures(project, flag):
    flag_update(flag=flag, archived=True)
    assert events_ingest(project=project, events=[flag_exposure()]).accepted == 1


def test_an_exposure_naming_an_experiment_and_a_flag_is_an_experiment_exposure(project, flag):
    result = events_ingest(project=project, events=[{**flag_exposure(), "experiment": "nope"}])
    assert [r["field"] for r in result.rejected] == ["experiment"]


def test_an_exposure_naming_neither_says_what_is_required(project):
    event = {k: v for k, v in flag_exposure().items() if k != "flag"}
    [rejected] = events_ingest(project=project, events=[event]).rejected
    assert rejected["field"] == "experiment" and "'flag'" in rejected["message"]


def test_flag_exposures_are_idempotent_and_counted_once(project, flag):
    events = [flag_exposure("f1", "u1"), flag_exposure("f2", "u2", variation="off")]
    first = events_ingest(project=project, events=[*events, flag_exposure("f1", "u1")])
    assert (first.accepted, first.duplicates) == (2, 1)
    retry = events_ingest(project=project, events=events)
    assert (retry.accepted, retry.duplicates) == (0, 2)
    assert FlagExposure.objects.count() == 2
    usage = {u.variation: u.count for u in FlagUsage.objects.filter(flag=flag)}
    assert usage == {"on": 1, "off": 1}


def test_usage_counts_per_variation_and_day_with_the_latest_time(project, flag):
    events_ingest(
        project=project,
        events=[
            flag_exposure("a", "u1", timestamp="2026-11-29T10:00:00Z"),
            flag_exposure("b", "u2", timestamp="2026-11-29T23:59:00Z"),
            flag_exposure("c", "u3", timestamp="2026-11-30T00:01:00Z"),
        ],
    )
    events_ingest(project=project, events=[flag_exposure("d", "u4", timestamp=TS)])
    rows = {
        (u.variation, u.day): (u.count, u.last_at)
        for u in FlagUsage.objects.filter(flag=flag, environment__key="production")
    }
    assert rows == {
        ("on", date(2026, 11, 29)): (3, datetime(2026, 11, 29, 23, 59, tzinfo=UTC)),
        ("on", date(2026, 11, 30)): (1, datetime(2026, 11, 30, 0, 1, tzinfo=UTC)),
    }


def test_all_three_types_in_one_batch(project, metrics, flag):
    running_experiment(project)
    events = [experiment_exposure(), metric(), flag_exposure()]
    result = events_ingest(project=project, events=events)
    assert (result.accepted, result.rejected) == (3, [])
    counts = (Exposure.objects.count(), MetricEvent.objects.count(), FlagExposure.objects.count())
    assert counts == (1, 1, 1)


def test_a_batch_id_used_twice_across_types_is_one_event(project, flag):
    result = events_ingest(project=project, events=[metric("same"), flag_exposure("same")])
    assert (result.accepted, result.duplicates) == (1, 1)


MAKERS = {
    "flag": lambda event_id: flag_exposure(event_id),
    "metric": lambda event_id: metric(event_id),
    "exposure": lambda event_id: experiment_exposure(event_id),
}


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for a in MAKERS for b in MAKERS if a != b and "flag" in (a, b)],
)
def test_one_event_id_per_project_across_the_three_types(project, metrics, flag, first, second):
    running_experiment(project)
    assert events_ingest(project=project, events=[MAKERS[first]("same-id")]).accepted == 1
    result = events_ingest(project=project, events=[MAKERS[second]("same-id"), metric("other")])
    assert (result.accepted, result.duplicates) == (1, 1)
    stored = sum(
        model.objects.filter(event_id="same-id").count()
        for model in (Exposure, MetricEvent, FlagExposure)
    )
    assert stored == 1
    assert FlagUsage.objects.filter(flag=flag).count() == (first == "flag")


def test_usage_rows_are_per_environment(project, flag):
    staging = Environment.objects.get(project=project, key="staging")
    events_ingest(project=project, events=[flag_exposure("a")], environment_id=staging.pk)
    events_ingest(project=project, events=[flag_exposure("b")])
    rows = sorted(FlagUsage.objects.values_list("environment__key", "count"))
    assert rows == [("production", 1), ("staging", 1)]
