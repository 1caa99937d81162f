"""Event ingestion: every validation rule, idempotency, late events, exposures vs assignments."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from assignments.models import Assignment, Exposure, MetricEvent
from assignments.services import MAX_PROPERTIES_BYTES, events_ingest
from experiments.services import experiment_create, experiment_pause, project_create
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db
TS = "2026-11-29T10:00:00Z"


def exposure(event_id="x1", unit_id="u1", variant="treatment", **fields):
    event = {
        "event_id": event_id,
        "type": "exposure",
        "experiment": "checkout-v2",
        "variant": variant,
        "unit_id": unit_id,
        "timestamp": TS,
    }
    event.update(fields)
    return event


def metric(event_id="m1", unit_id="u1", **fields):
    event = {
        "event_id": event_id,
        "type": "metric",
        "name": "purchase",
        "unit_id": unit_id,
        "value": 12.5,
        "timestamp": TS,
    }
    event.update(fields)
    return event


def _without(event, name):
    return {k: v for k, v in event.items() if k != name}


FAR_FUTURE = (datetime.now(UTC) + timedelta(days=3)).isoformat()

INVALID = [
    ("not an object", ["x"], "event", "JSON object"),
    ("event_id missing", _without(metric(), "event_id"), "event_id", "required"),
    ("event_id a number", metric(event_id=7), "event_id", "must be a string"),
    ("event_id empty", metric(event_id=""), "event_id", "must not be empty"),
    ("event_id too long", metric(event_id="e" * 201), "event_id", "longer than 200"),
    ("event_id with NUL", metric(event_id="a\x00b"), "event_id", "NUL"),
    ("event_id lone surrogate", metric(event_id="a\ud800"), "event_id", "Unicode"),
    ("type missing", _without(metric(), "type"), "type", "'exposure' or 'metric'"),
    ("type unknown", metric(type="click"), "type", "'exposure' or 'metric'"),
    ("unit_id missing", _without(metric(), "unit_id"), "unit_id", "required"),
    ("unit_id a number", metric(unit_id=5), "unit_id", "must be a string"),
    ("unit_id too long", metric(unit_id="u" * 201), "unit_id", "longer than 200"),
    ("timestamp missing", _without(metric(), "timestamp"), "timestamp", "ISO 8601"),
    ("timestamp not a date", metric(timestamp="yesterday"), "timestamp", "ISO 8601"),
    ("timestamp in milliseconds", metric(timestamp=1764410400000), "timestamp", "milliseconds"),
    ("timestamp a negative number", metric(timestamp=-1), "timestamp", "1970"),
    ("timestamp an infinite number", metric(timestamp=float("inf")), "timestamp", "finite"),
    ("timestamp a bool", metric(timestamp=True), "timestamp", "Unix seconds (got bool)"),
    ("timestamp a list", metric(timestamp=[TS]), "timestamp", "Unix seconds (got list)"),
    ("timestamp too long", metric(timestamp="2" * 65), "timestamp", "longer than 64"),
    ("timestamp in the future", metric(timestamp=FAR_FUTURE), "timestamp", "clock"),
    ("timestamp before 1970", metric(timestamp="1969-12-31T00:00:00Z"), "timestamp", "1970"),
    ("timestamp out of range", metric(timestamp="0001-01-01T00:00:00+05:00"), "timestamp", ""),
    ("experiment missing", _without(exposure(), "experiment"), "experiment", "required"),
    ("experiment unknown", exposure(experiment="nope"), "experiment", "Unknown experiment"),
    ("experiment draft", exposure(experiment="draft-one"), "experiment", "draft"),
    ("variant missing", _without(exposure(), "variant"), "variant", "required"),
    ("variant unknown", exposure(variant="purple"), "variant", "no variant 'purple'"),
    ("variant a list", exposure(variant=["a"]), "variant", "must be a string"),
    ("name missing", _without(metric(), "name"), "name", "required"),
    ("name too long", metric(name="n" * 201), "name", "longer than 200"),
    ("value a string", metric(value="12.5"), "value", "must be a number"),
    ("value a bool", metric(value=True), "value", "must be a number"),
    ("value not finite", metric(value=float("nan")), "value", "finite"),
    ("value too large", metric(value=10**400), "value", "too large"),
    ("properties a list", metric(properties=[1]), "properties", "JSON object"),
    ("properties too big", metric(properties={"k": "v" * 5000}), "properties", "limit is 4096"),
    ("properties not finite", metric(properties={"x": float("inf")}), "properties", "finite"),
    ("properties with NUL", metric(properties={"x": "\x00"}), "properties", "NUL"),
    (
        "properties too deep",
        metric(properties={"a": {"b": {"c": {"d": 1}}}}),
        "properties",
        "more than 3 levels deep",
    ),
    ("properties a list too deep", metric(properties={"a": [[[1]]]}), "properties", "3 levels"),
    (
        "properties with too many keys",
        metric(properties={"o": {f"k{i}": i for i in range(100)}}),
        "properties",
        "101 keys (nested objects' included); the limit is 100",
    ),
    ("properties key too long", metric(properties={"k" * 101: 1}), "properties", "longer than"),
    ("properties integer beyond a double", metric(properties={"n": 10**400}), "properties", ""),
]


@pytest.fixture
def experiment(project, metrics):
    experiment_create(project=project, **experiment_payload("draft-one"))
    return running_experiment(project)


@pytest.mark.parametrize(
    "event, field, message", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_event_is_rejected_with_index_field_and_message(
    project, experiment, event, field, message
):
    result = events_ingest(project=project, events=[metric("ok-1"), event, exposure("ok-2")])
    assert result.accepted == 2 and result.duplicates == 0
    [rejected] = result.rejected
    assert rejected["index"] == 1 and rejected["field"] == field
    assert message in rejected["message"]
    assert MetricEvent.objects.count() == 1 and Exposure.objects.count() == 1


def test_valid_events_are_stored_with_their_fields(project, experiment):
    result = events_ingest(
        project=project,
        events=[
            exposure(),
            metric(properties={"plan": "pro", "items": [1, 2], "name": "Zoë"}),
            metric("m2", name="signup", value=None, timestamp="2026-11-29T11:00:00"),
            metric("m3", value=3, timestamp="2026-11-29T12:00:00+02:00"),
        ],
    )
    assert (result.accepted, result.duplicates, result.rejected) == (4, 0, [])
    x = Exposure.objects.get()
    assert (x.experiment_id, x.variant.key, x.unit_id, x.project_id) == (
        experiment.pk,
        "treatment",
        "u1",
        project.pk,
    )
    assert x.ts == datetime(2026, 11, 29, 10, tzinfo=UTC)
    m1, m2, m3 = MetricEvent.objects.order_by("event_id")
    assert m1.properties == {"plan": "pro", "items": [1, 2], "name": "Zoë"} and m1.value == 12.5
    assert m2.value == 1.0 and m2.properties is None and m2.name == "signup"
    assert m2.ts == datetime(2026, 11, 29, 11, tzinfo=UTC)  # no offset means UTC
    assert m3.ts == datetime(2026, 11, 29, 10, tzinfo=UTC) and m3.value == 3.0


def test_retries_are_idempotent(project, experiment):
    batch = [exposure(), metric(), metric("m2")]
    assert events_ingest(project=project, events=batch).accepted == 3
    retry = events_ingest(project=project, events=batch + [metric("m3")])
    assert (retry.accepted, retry.duplicates) == (1, 3)
    assert Exposure.objects.count() == 1 and MetricEvent.objects.count() == 3


def test_duplicates_inside_a_batch_are_counted_once_stored(project, experiment):
    result = events_ingest(
        project=project, events=[metric(), metric(value=99), exposure(event_id="m1"), metric("m2")]
    )
    assert (result.accepted, result.duplicates) == (2, 2)
    assert MetricEvent.objects.get(event_id="m1").value == 12.5  # the first one wins


def test_event_ids_are_scoped_to_the_project(project, experiment, admin_user):
    other = project_create(slug="other", name="Other", owner=admin_user)
    assert events_ingest(project=project, events=[metric()]).accepted == 1
    assert events_ingest(project=other, events=[metric()]).accepted == 1
    assert MetricEvent.objects.count() == 2


def test_exposure_for_another_projects_experiment_is_unknown(project, experiment, admin_user):
    other = project_create(slug="other", name="Other", owner=admin_user)
    [rejected] = events_ingest(project=other, events=[exposure()]).rejected
    assert rejected["field"] == "experiment" and "Unknown experiment" in rejected["message"]


def test_late_and_out_of_order_events_keep_their_own_timestamps(project, experiment):
    now = timezone.now()
    stamps = [now - timedelta(days=40), now - timedelta(minutes=1), now - timedelta(days=2)]
    events = [metric(f"m{i}", timestamp=ts.isoformat()) for i, ts in enumerate(stamps)]
    assert events_ingest(project=project, events=events).accepted == 3
    stored = dict(MetricEvent.objects.values_list("event_id", "ts"))
    assert [stored[f"m{i}"] for i in range(3)] == stamps


def test_exposures_to_stopped_experiments_are_still_accepted(project, experiment):
    experiment_pause(experiment=experiment)
    assert events_ingest(project=project, events=[exposure()]).accepted == 1


def test_exposure_disagreeing_with_the_assignment_is_stored_as_a_mismatch(project, experiment):
    Assignment.objects.create(
        experiment=experiment, unit_id="u1", variant=experiment.variants.get(key="control")
    )
    result = events_ingest(
        project=project,
        events=[exposure("x1", variant="treatment"), exposure("x2", variant="control")],
    )
    assert result.accepted == 2
    flags = dict(Exposure.objects.values_list("event_id", "assignment_mismatch"))
    assert flags == {"x1": True, "x2": False}
    assert Assignment.objects.get().variant.key == "control"  # never overwritten


def test_first_exposure_of_an_unassigned_unit_stores_its_assignment(project, experiment):
    """An SDK that bucketed locally reports an exposure: /assign then answers the same."""
    later = "2026-11-29T11:00:00Z"
    events_ingest(
        project=project,
        events=[
            exposure("x2", unit_id="sdk-unit", variant="control", timestamp=later),
            exposure("x1", unit_id="sdk-unit", variant="treatment"),  # earlier, arrives second
        ],
    )
    stored = Assignment.objects.get(unit_id="sdk-unit")
    assert stored.variant.key == "treatment" and stored.phase == experiment.phase
    assert not Exposure.objects.filter(assignment_mismatch=True).exists()


def test_exposures_to_stopped_experiments_store_no_assignment(project, experiment):
    experiment_pause(experiment=experiment)
    events_ingest(project=project, events=[exposure()])
    assert not Assignment.objects.exists()


def test_retried_exposures_do_not_create_assignments(project, experiment):
    events_ingest(project=project, events=[exposure()])
    Assignment.objects.all().delete()
    events_ingest(project=project, events=[exposure()])
    assert not Assignment.objects.exists()


def test_properties_at_the_depth_and_key_limits_are_accepted(project, experiment):
    """Three levels (an object in an object in the properties), 100 keys, 100-character keys."""
    properties = {"a": {"b": {"c": 1}}, "l": [[1], {"x": "y"}], "k" * 100: 2}
    properties.update({f"k{i}": i for i in range(100 - 6)})
    result = events_ingest(project=project, events=[metric(properties=properties)])
    assert (result.accepted, result.rejected) == (1, [])
    assert MetricEvent.objects.get().properties == properties


def test_properties_at_the_limit_are_accepted(project, experiment):
    # {"k":"..."} is 8 bytes of JSON around the string
    properties = {"k": "v" * (MAX_PROPERTIES_BYTES - 8)}
    assert events_ingest(project=project, events=[metric(properties=properties)]).accepted == 1


def test_several_batches_in_one_transaction(project, experiment):
    """The PostgreSQL staging tables are emptied per batch, not only at commit."""
    with transaction.atomic():
        assert events_ingest(project=project, events=[metric("a"), exposure("b")]).accepted == 2
        second = events_ingest(project=project, events=[metric("c")])
    assert (second.accepted, second.duplicates) == (1, 0)
    assert MetricEvent.objects.count() == 2 and Exposure.objects.count() == 1


def test_empty_batch_is_fine(project, experiment):
    result = events_ingest(project=project, events=[])
    assert (result.accepted, result.duplicates, result.rejected) == (0, 0, [])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY path is PostgreSQL's")
def test_postgresql_ingests_through_copy(project, experiment):
    events = [metric(f"m{i}", unit_id=f"u{i}", properties={"i": i}) for i in range(3000)]
    events += [exposure(f"x{i}", unit_id=f"u{i}") for i in range(2000)]
    _record_sql.statements = []
    with connection.execute_wrapper(_record_sql):
        result = events_ingest(project=project, events=events)
    assert result.accepted == 5000
    assert sum("COPY" in s for s in _record_sql.statements) == 0  # COPY bypasses execute()
    assert any("abacus_staging_exposure" in s for s in _record_sql.statements)
    assert MetricEvent.objects.get(event_id="m7").properties == {"i": 7}
    assert Assignment.objects.count() == 2000
    # Non-ASCII and JSON-special characters survive COPY's text format.
    tricky = "tab\there \\ back\nslash Zoë 𝄞"
    result = events_ingest(
        project=project, events=[metric("t", unit_id=tricky, properties={"s": tricky})]
    )
    assert result.accepted == 1
    stored = MetricEvent.objects.get(event_id="t")
    assert stored.unit_id == tricky and stored.properties == {"s": tricky}


def test_an_event_id_stored_as_one_type_is_a_duplicate_as_the_other(project, experiment):
    assert events_ingest(project=project, events=[metric("same"), exposure("other")]).accepted == 2
    result = events_ingest(project=project, events=[exposure("same"), metric("other")])
    assert (result.accepted, result.duplicates) == (0, 2)
    assert (MetricEvent.objects.count(), Exposure.objects.count()) == (1, 1)


def _record_sql(execute, sql, params, many, context):
    _record_sql.statements.append(sql)
    return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
def test_accepted_events_are_committed_before_the_answer(project, metrics, service):
    running_experiment(project)
    r = service.post("/api/v1/events", {"events": [metric(), exposure()]}, format="json")
    assert r.status_code == 202 and r.json()["accepted"] == 2
    seen = []

    def other_connection():
        from django.db import connections

        seen.append((MetricEvent.objects.count(), Exposure.objects.count()))
        connections.close_all()

    thread = threading.Thread(target=other_connection)
    thread.start()
    thread.join()
    assert seen == [(1, 1)]


def test_max_event_value_setting_sets_the_bound_on_both_signs(project, experiment, settings):
    settings.ABACUS_MAX_EVENT_VALUE = 100
    result = events_ingest(
        project=project,
        events=[
            metric("m1", value=100),
            metric("m2", value=-100.0),
            metric("m3", value=100.5),
            metric("m4", value=-101),
        ],
    )
    assert result.accepted == 2
    assert [(r["index"], r["field"]) for r in result.rejected] == [(2, "value"), (3, "value")]
    assert "between -100 and 100" in result.rejected[0]["message"]
    assert sorted(MetricEvent.objects.values_list("value", flat=True)) == [-100.0, 100.0]


def test_numeric_timestamps_are_unix_seconds(project, experiment):
    """Logging pipelines send epoch seconds: an int or a float is seconds since 1970 (UTC)."""
    result = events_ingest(
        project=project,
        events=[metric("s1", timestamp=1764410400), metric("s2", timestamp=1764410400.25)],
    )
    assert result.accepted == 2 and result.rejected == []
    stored = dict(MetricEvent.objects.values_list("event_id", "ts"))
    assert stored["s1"] == datetime(2025, 11, 29, 10, 0, tzinfo=UTC)
    assert stored["s2"] == datetime(2025, 11, 29, 10, 0, 0, 250000, tzinfo=UTC)


def test_exposures_before_the_phase_start_are_stored_and_listed_as_ignored(project, experiment):
    """They are kept (a later phase change cannot resurrect them, but nothing is lost) and the
    sender hears that no analysis will count them; later events are not listed."""
    start = experiment.phase_started_at or experiment.started_at
    before = (start - timedelta(minutes=5)).isoformat()
    after = (start + timedelta(seconds=1)).isoformat()
    result = events_ingest(
        project=project,
        events=[
            exposure("early", "u1", timestamp=before),
            exposure("late", "u2", timestamp=after),
            metric("m-early", timestamp=before),  # metric events may precede (CUPED reads them)
        ],
    )
    assert result.accepted == 3 and result.rejected == []
    [ignored] = result.ignored
    assert ignored["index"] == 0 and ignored["reason"] == "before_phase_start"
    assert "not counted" in ignored["message"] and "checkout-v2" in ignored["message"]
    assert Exposure.objects.filter(event_id="early").exists()


@pytest.mark.parametrize("first,second", [("exposure", "metric"), ("metric", "exposure")])
def test_one_event_id_per_project_across_both_types(project, experiment, first, second):
    """(project, event_id) is the idempotency key whatever the type: the same id posted as an
    exposure and then as a metric event (in two batches) is stored once."""
    make = {"exposure": exposure, "metric": metric}
    assert events_ingest(project=project, events=[make[first]("same-id")]).accepted == 1
    result = events_ingest(project=project, events=[make[second]("same-id"), metric("other")])
    assert result.accepted == 1 and result.duplicates == 1
    stored = Exposure.objects.filter(event_id="same-id").count() + (
        MetricEvent.objects.filter(event_id="same-id").count()
    )
    assert stored == 1
