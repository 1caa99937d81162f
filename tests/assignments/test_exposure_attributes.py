"""Exposure attributes at ingestion: stored as sent (both storage paths), bounded in size and
depth, and a bad value rejects its event with a message naming 'attributes'."""

import pytest

from assignments.models import Exposure
from assignments.services import MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH, events_ingest
from tests.assignments.test_ingest import exposure, metric
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(project, metrics):
    return running_experiment(project)


def test_exposure_attributes_are_stored_as_sent(project, experiment):
    """An exposure's attributes are stored with it; one without any stores null."""
    attributes = {"country": "DE", "new": True, "visits": 3, "tags": ["a", "b"], "name": "Zoë"}
    result = events_ingest(
        project=project,
        events=[exposure("x1", "u1", attributes=attributes), exposure("x2", "u2"), metric()],
    )
    assert (result.accepted, result.rejected) == (3, [])
    stored = dict(Exposure.objects.values_list("event_id", "attributes"))
    assert stored == {"x1": attributes, "x2": None}


def test_explicit_null_attributes_are_no_attributes(project, experiment):
    """``"attributes": null`` is the same as leaving them out."""
    result = events_ingest(project=project, events=[exposure(attributes=None)])
    assert result.accepted == 1 and Exposure.objects.get().attributes is None


def _nested(depth):
    value = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return {"k": value}


@pytest.mark.parametrize(
    "attributes, message",
    [
        (["DE"], "must be a JSON object"),
        ("country=DE", "must be a JSON object"),
        ({"country": "D" * MAX_ATTRIBUTES_BYTES}, f"the limit is {MAX_ATTRIBUTES_BYTES}"),
        (_nested(MAX_ATTRIBUTES_DEPTH + 1), f"more than {MAX_ATTRIBUTES_DEPTH} levels deep"),
        ({"list": [[["x"]]]}, "levels deep"),
        ({"x": float("nan")}, "finite numbers"),
        ({"x": "a\x00b"}, "NUL"),
    ],
    ids=["list", "string", "too big", "too deep", "lists count as levels", "nan", "NUL"],
)
def test_bad_attributes_reject_the_event_naming_the_field(project, experiment, attributes, message):
    """The event is rejected with field 'attributes' and a message saying what is wrong; the
    rest of the batch is stored."""
    result = events_ingest(
        project=project, events=[exposure("ok"), exposure("bad", attributes=attributes)]
    )
    assert result.accepted == 1
    [rejected] = result.rejected
    assert (rejected["index"], rejected["field"]) == (1, "attributes")
    assert message in rejected["message"]
    assert list(Exposure.objects.values_list("event_id", flat=True)) == ["ok"]


def test_attributes_at_the_bounds_are_accepted(project, experiment):
    """Exactly the byte limit and exactly the depth limit are accepted."""
    overhead = len('{"c":""}')
    at_size = {"c": "x" * (MAX_ATTRIBUTES_BYTES - overhead)}
    result = events_ingest(
        project=project,
        events=[
            exposure("x1", "u1", attributes=at_size),
            exposure("x2", "u2", attributes=_nested(MAX_ATTRIBUTES_DEPTH)),
        ],
    )
    assert (result.accepted, result.rejected) == (2, [])


def test_attributes_of_a_duplicate_do_not_replace_the_stored_ones(project, experiment):
    """A retried exposure is a duplicate: the first attributes stay."""
    events_ingest(project=project, events=[exposure(attributes={"country": "DE"})])
    result = events_ingest(project=project, events=[exposure(attributes={"country": "FR"})])
    assert result.duplicates == 1
    assert Exposure.objects.get().attributes == {"country": "DE"}


def test_events_api_stores_attributes_and_names_the_field(service, experiment):
    """Through POST /api/v1/events: attributes stored; a bad one is listed under 'rejected'."""
    response = service.post(
        "/api/v1/events",
        {
            "events": [
                exposure("x1", attributes={"platform": "ios"}),
                exposure("x2", "u2", attributes={"a": {"b": {"c": {"d": 1}}}}),
            ]
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {
            "index": 1,
            "field": "attributes",
            "message": "'attributes' nests objects and arrays more than 3 levels deep.",
        }
    ]
    assert Exposure.objects.get().attributes == {"platform": "ios"}
