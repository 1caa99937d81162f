"""POST /api/v1/events/beacon: events from web pages with an environment's public browser key.

The key posts events of its own project only, from allowed origins only, in small batches,
validated as /events validates them; CORS headers echo allowed origins only; every other
endpoint refuses the key; rate limits per key and per client address answer 429.
"""

import json
import random

import pytest
from django.utils import timezone

from assignments.beacon_api import MAX_BROWSER_BATCH, MAX_BROWSER_BODY_BYTES
from assignments.models import Exposure, FlagExposure, MetricEvent
from experiments.models import Environment
from experiments.services import (
    environment_browser_key_rotate,
    environment_browser_update,
    metric_create,
    project_create,
)
from flags.services import flag_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
TS = "2026-11-29T10:00:00Z"
SHOP = "https://shop.example"
URL = "/api/v1/events/beacon"


def fresh_address() -> str:
    """An address of its own (a random /64 of the documentation prefix), so the per-address
    counter of one test never meets another's within the same minute."""
    return f"2001:db8:{random.getrandbits(16):x}:{random.getrandbits(16):x}::1"


def browser_key(project, environment: str = "production", origins=(SHOP,)) -> str:
    env = Environment.objects.get(project=project, key=environment)
    environment_browser_update(environment=env, origins=list(origins), enabled=True)
    return env.browser_key


def metric(i, name="purchase", unit="u1"):
    return {
        "event_id": f"m{i}",
        "type": "metric",
        "name": name,
        "unit_id": unit,
        "value": 2.5,
        "timestamp": TS,
    }


def beacon(client, key, body, origin=SHOP, content_type="text/plain;charset=UTF-8", **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = {"Origin": origin} if origin else {}
    extra.setdefault("REMOTE_ADDR", fresh_address())
    query = f"?key={key}" if key is not None else ""
    return client.post(URL + query, data=data, content_type=content_type, headers=headers, **extra)


@pytest.fixture
def key(project):
    return browser_key(project)


def test_page_from_an_allowed_origin_posts_exposures_and_events(project, metrics, key, client):
    """A text/plain beacon (no preflight) is stored for the key's project; the answer echoes
    the origin, varies by it and never allows credentials."""
    running_experiment(project)
    exposure = {
        "event_id": "e1",
        "type": "exposure",
        "experiment": "checkout-v2",
        "variant": "treatment",
        "unit_id": "u1",
        "timestamp": timezone.now().isoformat(),
    }
    r = beacon(client, key, {"events": [exposure, metric(1)]})
    assert r.status_code == 202, r.content
    assert r.json() == {"accepted": 2, "duplicates": 0, "rejected": [], "ignored": []}
    assert r["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in r["Vary"]
    assert "Access-Control-Allow-Credentials" not in r
    assert Exposure.objects.filter(project=project, event_id="e1").exists()
    assert MetricEvent.objects.get(project=project, event_id="m1").value == 2.5


def test_fetch_with_a_json_body_is_accepted_too(project, key, client):
    r = beacon(client, key, {"events": [metric(1)]}, content_type="application/json")
    assert r.status_code == 202 and r.json()["accepted"] == 1


def test_a_resent_batch_is_stored_once(project, key, client):
    """The script's event ids make a retry idempotent."""
    body = {"events": [metric(1), metric(2)]}
    assert beacon(client, key, body).json()["accepted"] == 2
    again = beacon(client, key, body).json()
    assert again["accepted"] == 0 and again["duplicates"] == 2
    assert MetricEvent.objects.count() == 2


@pytest.mark.parametrize("origin", ["https://evil.example", "http://shop.example", None])
def test_an_origin_not_allowed_is_refused_and_nothing_is_stored(project, key, client, origin):
    """CORS alone would not stop a text/plain beacon: the server refuses it (403 naming the
    Origin), with no Access-Control-Allow-Origin."""
    r = beacon(client, key, {"events": [metric(1)]}, origin=origin)
    assert r.status_code == 403
    assert r.json()["field"] == "Origin" and "allowed origins" in r.json()["detail"]
    assert "Access-Control-Allow-Origin" not in r
    assert not MetricEvent.objects.exists()


def test_preflight_from_an_allowed_origin_names_the_method_and_header(key, client):
    r = client.options(
        f"{URL}?key={key}",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        REMOTE_ADDR=fresh_address(),
    )
    assert r.status_code == 204
    assert r["Access-Control-Allow-Origin"] == SHOP
    assert r["Access-Control-Allow-Methods"] == "POST"
    assert r["Access-Control-Allow-Headers"] == "Content-Type"
    assert int(r["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in r


def test_preflight_from_another_origin_gets_no_cors_headers(key, client):
    r = client.options(
        f"{URL}?key={key}",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        REMOTE_ADDR=fresh_address(),
    )
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r
    assert "Access-Control-Allow-Methods" not in r


def test_preflight_is_answered_for_the_beacon_endpoint_only(key, client):
    """Server endpoints answer no CORS preflight: pages cannot call them."""
    r = client.options(
        f"/api/v1/events?key={key}",
        headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in r


def test_missing_unknown_rotated_and_turned_off_keys_are_401_naming_the_key(project, client):
    key = browser_key(project)
    env = Environment.objects.get(project=project, key="production")
    for bad in (None, "", "web-nope", "x" * 500):
        r = beacon(client, bad, {"events": [metric(1)]})
        assert r.status_code == 401, bad
        assert r.json()["field"] == "key"
    environment_browser_key_rotate(environment=env)
    assert beacon(client, key, {"events": [metric(1)]}).status_code == 401
    assert beacon(client, env.browser_key, {"events": [metric(1)]}).status_code == 202
    environment_browser_update(environment=env, enabled=False)
    assert env.browser_key is None
    assert beacon(client, "None", {"events": [metric(2)]}).status_code == 401
    assert MetricEvent.objects.count() == 1


def test_a_server_api_key_is_no_browser_key(project, service_secret, client):
    r = beacon(client, service_secret, {"events": [metric(1)]})
    assert r.status_code == 401
    assert not MetricEvent.objects.exists()


def test_the_key_posts_for_its_own_project_only(project, metrics, key, client, admin_user):
    """Events land in the key's project; another project's experiment is unknown here."""
    other = project_create(slug="other", name="Other", owner=admin_user)
    metric_create(project=other, key="purchase", name="P", kind="binomial", event_name="buy")
    running_experiment(other, key="their-test")
    exposure = {
        "event_id": "e1",
        "type": "exposure",
        "experiment": "their-test",
        "variant": "control",
        "unit_id": "u1",
        "timestamp": TS,
    }
    r = beacon(client, key, {"events": [exposure, metric(2)]})
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [
        {
            "index": 0,
            "field": "experiment",
            "message": "Unknown experiment 'their-test' (or still a draft).",
        }
    ]
    assert not Exposure.objects.exists()
    assert MetricEvent.objects.get().project == project
    assert not MetricEvent.objects.filter(project=other).exists()


def test_flag_exposures_count_in_the_keys_environment(project, client):
    flag_create(project=project, key="new-checkout", name="New checkout")
    key = browser_key(project, "staging")
    event = {
        "event_id": "f1",
        "type": "exposure",
        "flag": "new-checkout",
        "variation": "on",
        "unit_id": "u1",
        "timestamp": TS,
    }
    assert beacon(client, key, {"events": [event]}).json()["accepted"] == 1
    assert FlagExposure.objects.get().environment.key == "staging"


def test_a_browser_batch_is_small(project, key, client):
    """At most MAX_BROWSER_BATCH events (a server key's is 10,000): 413 naming events."""
    assert MAX_BROWSER_BATCH < 10_000
    ok = beacon(client, key, {"events": [metric(i) for i in range(MAX_BROWSER_BATCH)]})
    assert ok.status_code == 202
    r = beacon(client, key, {"events": [metric(i) for i in range(MAX_BROWSER_BATCH + 1)]})
    assert r.status_code == 413 and r.json()["field"] == "events"
    assert f"at most {MAX_BROWSER_BATCH}" in r.json()["detail"]


def test_a_body_over_64_kib_is_413(project, key, client):
    big = [dict(metric(i), properties={"pad": "x" * 3000}) for i in range(30)]
    body = json.dumps({"events": big})
    assert len(body) > MAX_BROWSER_BODY_BYTES
    r = beacon(client, key, body)
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert not MetricEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [("{not json", "body"), ("[1]", "body"), ('{"event": []}', "events"), (" ", "body")],
)
def test_bad_bodies_are_400_naming_the_field(key, client, body, field):
    r = beacon(client, key, body)
    assert r.status_code == 400 and r.json()["field"] == field


def test_bad_events_are_rejected_naming_their_field_as_on_events(project, key, client):
    bad = [
        {**metric(1), "unit_id": ""},
        {**metric(2), "value": "lots"},
        {**metric(3), "timestamp": 1764410400000},
        {**metric(4), "properties": {"a": "x" * 5000}},
    ]
    r = beacon(client, key, {"events": bad})
    assert r.status_code == 202
    assert [(x["index"], x["field"]) for x in r.json()["rejected"]] == [
        (0, "unit_id"),
        (1, "value"),
        (2, "timestamp"),
        (3, "properties"),
    ]


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_other_content_types_are_415(key, client, content_type):
    r = beacon(client, key, '{"events": []}', content_type=content_type)
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"


def test_the_browser_key_opens_no_other_endpoint(project, key, client, metrics):
    """As a Bearer key or as ?key=, on every service and people's endpoint: 401 or 403."""
    running_experiment(project)
    calls = [
        ("post", "/api/v1/events", {"events": [metric(1)]}),
        ("post", "/api/v1/assign", {"unit_id": "u1"}),
        ("post", "/api/v1/assign/bulk", {"units": [{"unit_id": "u1"}]}),
        ("post", "/api/v1/evaluate", {"unit_id": "u1"}),
        ("get", "/api/v1/projects/shop/experiments/checkout-v2/results", None),
        ("get", "/api/v1/projects/shop/experiments/", None),
        ("get", "/api/v1/projects/shop/environments/production/browser/", None),
        ("patch", "/api/v1/projects/shop/environments/production/browser/", {"origins": []}),
        ("get", "/api/v1/projects/", None),
    ]
    for method, path, body in calls:
        data = json.dumps(body) if body is not None else None
        options = {"content_type": "application/json"} if data else {}
        as_bearer = getattr(client, method)(
            path, data, headers={"Authorization": f"Bearer {key}", "Origin": SHOP}, **options
        )
        as_query = getattr(client, method)(
            f"{path}?key={key}", data, headers={"Origin": SHOP}, **options
        )
        assert as_bearer.status_code in (401, 403), (path, as_bearer.status_code)
        assert as_query.status_code in (401, 403), (path, as_query.status_code)
    assert not MetricEvent.objects.exists()
    env = Environment.objects.get(project=project, key="production")
    assert env.browser_origins == [SHOP]


# --- rate limits ------------------------------------------------------------------------------


def test_past_the_per_key_limit_the_answer_is_429_with_retry_after(project, client, settings):
    """Requests from many addresses count against the key; another key is not throttled."""
    settings.ABACUS_BROWSER_RATE_LIMIT_PER_MINUTE = 3
    key = browser_key(project, "production")
    other = browser_key(project, "staging")
    for i in range(3):
        assert beacon(client, key, {"events": [metric(i)]}).status_code == 202
    refused = beacon(client, key, {"events": [metric(9)]})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "browser key may make 3 requests per minute" in refused.json()["detail"]
    assert refused["Access-Control-Allow-Origin"] == SHOP  # a fetch may read why
    assert beacon(client, other, {"events": [metric(10)]}).status_code == 202
    assert not MetricEvent.objects.filter(event_id="m9").exists()


def test_past_the_per_address_limit_the_answer_is_429_whatever_the_key(project, client, settings):
    """One address is counted across keys, and before its key is even looked up."""
    settings.ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE = 3
    key, other = browser_key(project, "production"), browser_key(project, "staging")
    address = fresh_address()
    assert beacon(client, key, {"events": [metric(1)]}, REMOTE_ADDR=address).status_code == 202
    assert beacon(client, other, {"events": [metric(2)]}, REMOTE_ADDR=address).status_code == 202
    assert beacon(client, "web-nope", {"events": []}, REMOTE_ADDR=address).status_code == 401
    refused = beacon(client, key, {"events": [metric(3)]}, REMOTE_ADDR=address)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "this address may make 3 requests per minute" in refused.json()["detail"]
    assert beacon(client, key, {"events": [metric(4)]}).status_code == 202  # another address


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(project, client, settings):
    """A client cannot dodge the per-address limit by inventing X-Forwarded-For."""
    settings.ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE = 2
    settings.ABACUS_PROXY_COUNT = 0
    key, address = browser_key(project), fresh_address()
    answers = [
        beacon(
            client,
            key,
            {"events": [metric(i)]},
            REMOTE_ADDR=address,
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
        ).status_code
        for i in range(3)
    ]
    assert answers == [202, 202, 429]


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(project, client, settings):
    """ABACUS_PROXY_COUNT=1: the entry the proxy appended is the client; entries the client
    wrote itself further left change nothing."""
    settings.ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE = 2
    settings.ABACUS_PROXY_COUNT = 1
    key, proxy = browser_key(project), fresh_address()
    first, second = fresh_address(), fresh_address()

    def post(i, forwarded):
        body = {"events": [metric(i)]}
        return beacon(
            client, key, body, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded
        ).status_code

    assert [post(1, first), post(2, f"10.0.0.1, {first}"), post(3, f"10.0.0.2, {first}")] == [
        202,
        202,
        429,
    ]
    assert post(4, second) == 202


def test_ipv6_clients_are_counted_by_their_64(rf, settings):
    from core.client_address import client_network

    settings.ABACUS_PROXY_COUNT = 0
    one = rf.get("/", REMOTE_ADDR="2001:db8:1:2::1")
    same = rf.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9")
    other = rf.get("/", REMOTE_ADDR="2001:db8:1:3::1")
    v4 = rf.get("/", REMOTE_ADDR="203.0.113.7")
    mapped = rf.get("/", REMOTE_ADDR="::ffff:203.0.113.7")
    assert client_network(one) == client_network(same) == "2001:db8:1:2::/64"
    assert client_network(other) != client_network(one)
    assert client_network(v4) == client_network(mapped) == "203.0.113.7"


def test_the_script_is_served_by_abacus_small_and_without_dependencies(client):
    """static/abacus/beacon.js: no import, no other host, under 8 KB."""
    from django.contrib.staticfiles import finders

    path = finders.find("abacus/beacon.js")
    text = open(path, encoding="utf-8").read()
    assert len(text.encode()) < 8_000
    assert "import " not in text and "require(" not in text
    assert "sendBeacon" in text and "keepalive" in text and "randomUUID" in text
    assert "http://" not in text.replace("https://abacus.example.com", "")
