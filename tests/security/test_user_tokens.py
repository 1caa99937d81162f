"""People's API tokens (`Authorization: Token <key>`): stored only as digests, with an expiry,
revocable, never shown after creation; and any unusable credential is a 401 with a challenge."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from experiments.services import (
    api_key_create,
    api_key_revoke,
    metric_create,
    user_token_create,
    user_tokens_revoke,
)
from tests.factories import running_experiment

pytestmark = [pytest.mark.security, pytest.mark.django_db]

RESULTS = "/api/v1/projects/shop/experiments/checkout-v2/results"


@pytest.fixture
def experiment(project):
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    return running_experiment(project)


def _client(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def _stored() -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        return " ".join(str(value) for row in cursor.fetchall() for value in row)


def test_a_token_is_stored_only_as_a_digest_and_expires(admin_user):
    created = user_token_create(user=admin_user)
    assert created.token not in _stored()
    assert created.token[15:] not in _stored()  # only knox's lookup prefix is kept
    assert created.expiry is not None and created.expiry > timezone.now() + timedelta(days=1)


def test_a_token_authenticates_people_and_results_apis(admin_user, experiment):
    people = _client(f"Token {user_token_create(user=admin_user).token}")
    assert people.get("/api/v1/projects/").status_code == 200
    assert people.get(RESULTS).status_code == 200


def test_drf_create_token_prints_a_working_token_once_and_revokes(admin_user, experiment):
    out = io.StringIO()
    call_command("drf_create_token", "alice", stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip()
    assert _client(f"Token {token}").get(RESULTS).status_code == 200
    call_command(
        "drf_create_token", "alice", "--revoke", stdout=io.StringIO(), stderr=io.StringIO()
    )
    refused = _client(f"Token {token}").get(RESULTS)
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Token"


def test_an_expired_or_revoked_token_is_a_401(admin_user, experiment):
    expired = user_token_create(user=admin_user)
    AuthToken.objects.filter(pk=expired.auth_token.pk).update(
        expiry=timezone.now() - timedelta(seconds=1)
    )
    revoked = user_token_create(user=admin_user)
    user_tokens_revoke(user=admin_user)
    for token in (expired.token, revoked.token, "not-a-token"):
        for path in ("/api/v1/projects/", RESULTS):
            r = _client(f"Token {token}").get(path)
            assert r.status_code == 401, (token, path)
            assert r["WWW-Authenticate"] == "Token"


def test_the_admin_never_shows_a_token(django_user_model, admin_user):
    created = user_token_create(user=admin_user)
    root = django_user_model.objects.create_superuser("root", "r@example.com", "root-pw-9876x")
    client = Client()
    client.force_login(root)
    listing = client.get("/admin/knox/authtoken/")
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    change = client.get(f"/admin/knox/authtoken/{created.auth_token.pk}/change/")
    for page in (listing, change):
        assert created.token not in page.content.decode()
        assert created.token[:15] not in page.content.decode()
    assert client.get("/admin/knox/authtoken/add/").status_code == 403


def test_a_revoked_service_key_gets_401_with_a_challenge_on_the_results_api(project, experiment):
    """Documented in docs/operations.md section 4: was a 403 on the results API."""
    created = api_key_create(project=project, name="svc", scopes=["read"])
    service = _client(f"Bearer {created.secret}")
    assert service.get(RESULTS).status_code == 200
    api_key_revoke(api_key=created.api_key)
    refused = service.get(RESULTS)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid or revoked API key."
    assert refused["WWW-Authenticate"] == "Bearer"


def test_no_credentials_on_a_people_api_is_a_401_with_a_challenge(project):
    r = APIClient().get("/api/v1/projects/")
    assert r.status_code == 401 and r["WWW-Authenticate"] == "Token"
