"""Logins: failed attempts are throttled by account and by client address (django-axes), and
weak passwords are refused wherever abacus sets one."""

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

from core.errors import DomainError
from experiments.models import Role
from experiments.services import membership_add

pytestmark = [pytest.mark.security, pytest.mark.django_db]

LIMIT = settings.AXES_FAILURE_LIMIT


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "r@example.com", "root-pw-9876x")


def _login(client: Client, path: str, username: str, password: str, addr: str = "10.0.0.1"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_an_account_is_locked_out_after_the_failure_limit(path, root):
    """LIMIT wrong passwords for one account, even from different addresses, lock it: the right
    password is then refused with a 429 page that says why and when to retry."""
    client = Client()
    for i in range(LIMIT):
        r = _login(client, path, "root", f"wrong-{i}", addr=f"10.0.0.{i + 1}")
        assert r.status_code in (200, 429)
    locked = _login(client, path, "root", "root-pw-9876x", addr="10.9.9.9")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert int(locked["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_a_client_address_is_locked_out_after_the_failure_limit(path, root, admin_user):
    """Guessing over many usernames from one address locks the address out too."""
    client = Client()
    for i in range(LIMIT):
        _login(client, path, f"guess-{i}", "password", addr="10.1.1.1")
    assert _login(client, path, "root", "root-pw-9876x", addr="10.1.1.1").status_code == 429
    # Another address (a colleague) may still log in.
    ok = _login(Client(), "/accounts/login/", "alice", "pw-alice-123", addr="10.2.2.2")
    assert ok.status_code == 302


def test_a_success_before_the_limit_resets_the_count(root):
    client = Client()
    for _ in range(LIMIT - 1):
        _login(client, "/accounts/login/", "root", "wrong")
    assert _login(client, "/accounts/login/", "root", "root-pw-9876x").status_code == 302
    for _ in range(LIMIT - 1):
        _login(Client(), "/accounts/login/", "root", "wrong")
    assert _login(Client(), "/accounts/login/", "root", "root-pw-9876x").status_code == 302


def test_the_lockout_expires_after_the_cool_off(root, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt

    for _ in range(LIMIT):
        _login(Client(), "/accounts/login/", "root", "wrong")
    assert _login(Client(), "/accounts/login/", "root", "root-pw-9876x").status_code == 429
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.first().attempt_time
        - (settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
    )
    assert _login(Client(), "/accounts/login/", "root", "root-pw-9876x").status_code == 302


@pytest.mark.parametrize("weak", ["password", "12345678", "abc", "alicealice"])
def test_weak_passwords_are_refused_by_the_validators(weak, django_user_model):
    user = django_user_model(username="alicealice", email="alice@example.com")
    with pytest.raises(ValidationError):
        validate_password(weak, user)


@pytest.mark.parametrize("weak", ["password", "12345678"])
def test_member_invite_refuses_a_weak_password(weak, project):
    with pytest.raises(DomainError) as exc:
        membership_add(project=project, username="carol", role=Role.VIEWER, password=weak)
    assert exc.value.field == "password"
