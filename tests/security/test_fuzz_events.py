"""Hypothesis throws malformed, huge, deeply nested and wrongly typed batches at /events.

Every answer must be a 2xx or a 4xx with a message a person can act on; never a 5xx.
"""

import json
import string

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.services import api_key_create
from tests.factories import running_experiment

pytestmark = [pytest.mark.security, pytest.mark.django_db]

EXAMPLES = 60
FIELDS = ("event_id", "type", "experiment", "variant", "unit_id", "name", "value", "timestamp")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["exposure", "metric", "checkout-v2", "control", "2026-11-29T10:00:00Z"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Events that are nearly right: the real field names with values of any type.
events = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)),
    st.fixed_dictionaries(
        {
            "event_id": st.text(min_size=1, max_size=300),
            "type": st.sampled_from(["exposure", "metric"]),
            "experiment": st.sampled_from(["checkout-v2", "nope", ""]),
            "variant": st.sampled_from(["control", "treatment", "x"]),
            "unit_id": st.one_of(st.text(max_size=250), st.integers()),
            "name": st.text(max_size=250),
            "value": scalars,
            "timestamp": st.one_of(st.text(max_size=40), st.datetimes().map(str), scalars),
            "properties": json_values,
        }
    ),
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"events": json_values}),
    st.fixed_dictionaries({"events": st.lists(events, max_size=20)}),
)


@pytest.fixture
def post(project, metrics):
    running_experiment(project)
    secret = api_key_create(project=project, name="fuzz", scopes=["ingest"]).secret
    client = Client(raise_request_exception=False)

    def send(body: bytes | str, content_type: str = "application/json"):
        return client.post(
            "/api/v1/events", body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {secret}"
        )

    return send


def _assert_handled(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    else:
        body = response.json()
        assert set(body) >= {"accepted", "duplicates", "rejected"}
        for item in body["rejected"]:
            assert item["message"] and isinstance(item["index"], int) and item["field"]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_wrongly_typed_and_malformed_batches_get_4xx_or_per_event_rejections(post, body):
    """Any JSON value as the body, or as the events, or as an event's fields: never a 500."""
    _assert_handled(post(json.dumps(body, allow_nan=True)))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.one_of(st.binary(max_size=200), st.text(alphabet=string.printable, max_size=200)))
def test_bodies_that_are_not_json_get_400(post, raw):
    """Random bytes, invalid UTF-8 and truncated JSON are refused with a message."""
    _assert_handled(post(raw))


@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_deeply_nested_bodies_get_a_4xx(post, depth):
    """Nesting deeper than the JSON parser's recursion limit is a 4xx, not a crash."""
    _assert_handled(post("[" * depth + "]" * depth))
    _assert_handled(post('{"events": ' + "[" * depth + "]" * depth + "}"))
    nested_event = '{"a":' * depth + "1" + "}" * depth
    _assert_handled(post('{"events": [{"event_id": "e", "properties": ' + nested_event + "}]}"))


def test_a_batch_over_the_limit_gets_413(post):
    """More than 10,000 events: 413 with the limit in the message."""
    response = post(json.dumps({"events": [{}] * 10_001}))
    assert response.status_code == 413
    assert "10000" in response.json()["detail"].replace(",", "")


def test_a_body_over_the_size_limit_is_refused(post, settings):
    """A body larger than ABACUS_MAX_BODY_BYTES is refused with 413/400 and a message."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    response = post(json.dumps({"events": [{"event_id": "x" * 1000}] * 200}))
    assert response.status_code in (400, 413)
    _assert_handled(response)


def test_huge_strings_and_numbers_are_rejected_per_event(post):
    """Megabyte-long ids and out-of-range numbers are per-event rejections, not errors."""
    body = {
        "events": [
            {
                "event_id": "e" * 1_000_000,
                "type": "metric",
                "name": "purchase",
                "unit_id": "u",
                "timestamp": "2026-11-29T10:00:00Z",
            },
            {
                "event_id": "big",
                "type": "metric",
                "name": "purchase",
                "unit_id": "u",
                "value": 10**400,
                "timestamp": "2026-11-29T10:00:00Z",
            },
            {
                "event_id": "props",
                "type": "metric",
                "name": "purchase",
                "unit_id": "u",
                "timestamp": "2026-11-29T10:00:00Z",
                "properties": {"k": "v" * 100_000},
            },
        ]
    }
    response = post(json.dumps(body))
    _assert_handled(response)
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    assert [r["field"] for r in response.json()["rejected"]] == ["event_id", "value", "properties"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_other_content_types_are_refused_with_a_message(post, content_type):
    """Only JSON is accepted; other media types get 4xx with a message."""
    response = post('{"events": []}', content_type=content_type)
    _assert_handled(response)
