"""API keys: hashed at rest, compared in constant time, revoked at once, never logged, limited."""

import hashlib
import hmac
import logging
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from experiments import auth
from experiments.models import ApiKey
from experiments.services import api_key_create, project_create

pytestmark = [pytest.mark.security, pytest.mark.django_db]


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_secret_is_stored_only_as_its_sha256(project):
    """No column of any row holds the secret; the stored hash is SHA-256 of it."""
    created = api_key_create(project=project, name="svc", scopes=["assign"])
    row = ApiKey.objects.get(pk=created.api_key.pk)
    assert row.hashed_secret == hashlib.sha256(created.secret.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert created.secret not in stored
    assert created.secret.split("_", 2)[2] not in stored  # nor its random part


def test_admin_api_lists_keys_without_secrets(api, project):
    """Only creation shows the secret; listing never does."""
    created = api.post(
        "/api/v1/projects/shop/api-keys/", {"name": "svc", "scopes": ["ingest"]}, format="json"
    )
    assert created.status_code == 201 and created.json()["secret"].startswith("abk_")
    listing = api.get("/api/v1/projects/shop/api-keys/")
    assert created.json()["secret"] not in listing.content.decode()
    assert "hashed_secret" not in listing.content.decode()


def test_secrets_are_compared_in_constant_time(project, monkeypatch):
    """Known and unknown prefixes alike go through hmac.compare_digest on full-length hashes."""
    created = api_key_create(project=project, name="svc", scopes=["assign"])
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    wrong = created.secret[:-4] + "AAAA"
    assert auth.authenticate_secret(created.secret) is not None
    assert auth.authenticate_secret(wrong) is None
    assert auth.authenticate_secret("abk_ffffffffffff_" + "x" * 43) is None  # unknown prefix
    assert auth.authenticate_secret("garbage") is None
    # At least once per call (a key this process already knows is compared once more, before
    # the round trip that counts it), always on full-length hashes.
    assert len(calls) >= 4 and set(calls) == {(64, 64)}


def test_revoked_key_is_refused_on_the_next_request(api, project, metrics):
    """Revocation through the API takes effect immediately: the cached key is dropped."""
    created = api_key_create(project=project, name="svc", scopes=["assign"])
    service = _client(created.secret)
    assert service.post("/api/v1/assign", {"unit_id": "u1"}, format="json").status_code == 200
    revoked = api.delete(f"/api/v1/projects/shop/api-keys/{created.api_key.pk}/")
    assert revoked.status_code == 204
    refused = service.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid or revoked API key."


def test_use_is_recorded_for_rotations(project):
    """last_used_at tells an operator whether an old key still receives traffic."""
    created = api_key_create(project=project, name="svc", scopes=["assign"])
    assert created.api_key.last_used_at is None
    _client(created.secret).post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at is not None


def test_secrets_never_reach_the_logs(project, metrics, caplog):
    """Valid, revoked, malformed and failing requests log nothing of the secret."""
    caplog.set_level(logging.DEBUG)
    created = api_key_create(project=project, name="svc", scopes=["assign", "ingest"])
    service = _client(created.secret)
    service.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    service.post("/api/v1/events", {"events": "nope"}, format="json")
    service.post("/api/v1/events", {"events": [{"type": "?"}]}, format="json")
    service.get("/api/v1/projects/shop/metrics/")  # a user endpoint: refused
    _client(created.secret + "x").post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {getattr(record, 'request', '')!r}"
        for record in caplog.records
    )
    assert caplog.records, "expected some log records to inspect"
    assert created.secret not in logged
    assert created.secret.split("_", 2)[2] not in logged


def test_other_projects_key_sees_and_changes_nothing_of_this_project(project, metrics):
    """A key acts on its own project only, whatever experiment keys it names."""
    from tests.factories import running_experiment

    running_experiment(project)
    other = project_create(slug="other", name="Other")
    foreign = _client(api_key_create(project=other, name="x", scopes=["assign", "ingest"]).secret)
    answer = foreign.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert answer.status_code == 200 and answer.json()["assignments"] == {}
    named = foreign.post(
        "/api/v1/assign", {"unit_id": "u1", "experiments": ["checkout-v2"]}, format="json"
    )
    assert named.status_code == 400
    events = foreign.post(
        "/api/v1/events",
        {
            "events": [
                {
                    "event_id": "e1",
                    "type": "exposure",
                    "experiment": "checkout-v2",
                    "variant": "control",
                    "unit_id": "u1",
                    "timestamp": "2026-11-29T10:00:00Z",
                }
            ]
        },
        format="json",
    )
    assert events.status_code == 202 and events.json()["accepted"] == 0
    assert events.json()["rejected"][0]["field"] == "experiment"
    results = foreign.get("/api/v1/projects/shop/experiments/checkout-v2/results")
    assert results.status_code in (401, 403, 404)


# --- rate limiting --------------------------------------------------------------------------


@pytest.fixture
def limit(settings):
    # No cache.clear(): on Redis that flushes a database other processes share. Each test's
    # keys are new, and their counters are keyed by the key's random prefix.
    settings.ABACUS_RATE_LIMIT_PER_MINUTE = 5
    return 5


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/assign", {"unit_id": "u1"}),
        ("/api/v1/assign/bulk", {"units": [{"unit_id": "u1"}]}),
        ("/api/v1/events", {"events": []}),
    ],
)
def test_service_endpoints_answer_429_with_retry_after_past_the_limit(
    project, metrics, limit, path, body
):
    """The sixth request in a minute gets 429, a Retry-After in seconds and a JSON message."""
    secret = api_key_create(project=project, name="svc", scopes=["assign", "ingest"]).secret
    service = _client(secret)
    for _ in range(limit):
        assert service.post(path, body, format="json").status_code in (200, 202)
    refused = service.post(path, body, format="json")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "5 requests per minute" in refused.json()["detail"]


def test_limit_is_per_key(project, metrics, limit):
    """One key's burst does not throttle another key of the same project."""
    first = _client(api_key_create(project=project, name="a", scopes=["assign"]).secret)
    second = _client(api_key_create(project=project, name="b", scopes=["assign"]).secret)
    for _ in range(limit + 1):
        first.post("/api/v1/assign", {"unit_id": "u1"}, format="json")
    assert first.post("/api/v1/assign", {"unit_id": "u1"}, format="json").status_code == 429
    assert second.post("/api/v1/assign", {"unit_id": "u1"}, format="json").status_code == 200


def test_window_resets_after_a_minute():
    """The fixed window counts per minute: the next minute starts from zero."""
    bucket = f"reset-{uuid.uuid4().hex}"
    now = 1_000_040.0  # 20 s into a window (windows start at multiples of 60 s)
    decisions = [auth.rate_limit_hit(bucket, 2, now=now) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after == 40
    assert auth.rate_limit_hit(bucket, 2, now=now + 40).allowed


def test_limiter_fails_open_when_the_cache_is_down(monkeypatch):
    """A dead cache lets requests through (and stops asking it for a few seconds)."""

    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(auth, "count_in_window", broken)
    monkeypatch.setattr(auth, "_cache_down_until", 0.0)
    assert auth.rate_limit_hit("bucket-down", 1, now=100.0).allowed
    assert auth._cache_down_until == 100.0 + auth.CACHE_RETRY_SECONDS
    assert auth.rate_limit_hit("bucket-down", 1, now=101.0).allowed


def test_people_are_not_rate_limited_by_the_key_limiter(api, project, limit):
    """The limiter counts API keys; people's sessions and tokens are not counted."""
    for _ in range(limit + 2):
        assert api.get("/api/v1/projects/").status_code == 200
