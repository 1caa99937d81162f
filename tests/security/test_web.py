"""Web hardening: CSRF on every form, security headers, Secure cookies, `check --deploy`."""

import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from experiments.services import metric_create
from experiments.services.holdouts import holdout_create
from flags.services import (
    change_request_create,
    flag_create,
    flag_environment_update,
    scheduled_change_create,
    segment_create,
)
from notifications.services import notification_channel_create
from releases.services import release_create
from tests.factories import running_experiment
from tests.security.endpoints import all_endpoints, concrete_urls

pytestmark = [pytest.mark.security, pytest.mark.django_db]
ROOT = Path(__file__).resolve().parents[2]
FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.IGNORECASE | re.DOTALL)


@pytest.fixture
def site(admin_user, project):
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    running_experiment(project)
    flag = flag_create(project=project, key="new-checkout", name="New checkout")
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    scheduled = scheduled_change_create(
        flag=flag,
        environment=project.environments.get(key="staging"),
        at=timezone.now() + timedelta(days=1),
        change={"enabled": True},
    )
    request = change_request_create(
        flag=flag, environment=project.environments.get(key="production"), change={"enabled": True}
    )
    channel = notification_channel_create(
        project=project, kind="email", name="team", target="team@example.com"
    )
    staging = project.environments.get(key="staging")
    flag_environment_update(flag=flag, environment=staging, enabled=True)
    release = release_create(project=project, flag=flag, environment=staging, variation="on")
    values = {
        "flag": flag.key,
        "segment": "staff",
        "environment": "staging",
        "schedule_id": str(scheduled.pk),
        "request_id": str(request.pk),
        "channel_id": str(channel.pk),
        "release_id": str(release.pk),
        "holdout_id": str(holdout_create(project=project, name="H", share=0.05).pk),
        "project": "shop",
        "key": "checkout-v2",
        "layer": "search",
        "metric_key": "purchase",
        "username": "alice",
        "key_id": "1",
        "client_key": project.client_key,
    }
    pages = []
    for endpoint in all_endpoints():
        if endpoint.template.startswith(("api/", "admin/")) or endpoint.template in (
            "healthz",
            "readyz",
        ):
            continue
        pages.extend(concrete_urls(endpoint, values))
    return pages


def test_every_form_on_every_page_carries_a_csrf_token(admin_user, site):
    """Every POST form the project's admin can see includes csrfmiddlewaretoken."""
    client = Client()
    client.force_login(admin_user)
    checked = 0
    for url in site + ["/accounts/login/"]:
        response = client.get(url, follow=True)
        if response.status_code != 200 or "text/html" not in response["Content-Type"]:
            continue
        for form in FORM.findall(response.content.decode()):
            if re.search(r'method\s*=\s*["\']?post', form, re.IGNORECASE):
                checked += 1
                assert 'name="csrfmiddlewaretoken"' in form, f"{url}: form without CSRF:\n{form}"
    assert checked >= 3, "expected POST forms on the pages (logout, analyze, ...)"


def test_posts_without_a_csrf_token_are_refused(admin_user, site):
    """Session-authenticated POSTs to pages and to the API without the token get 403."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for url in site:
        response = client.post(url, {})
        assert response.status_code in (403, 405), f"POST {url} -> {response.status_code}"
    api = client.post("/api/v1/projects/", {"slug": "x"}, content_type="application/json")
    assert api.status_code == 403 and "CSRF" in api.json()["detail"]


def test_security_headers_on_pages_and_api(admin_user, client):
    """CSP, nosniff, frame denial and referrer policy on pages, the API and errors."""
    client.force_login(admin_user)
    for url in ("/", "/accounts/login/", "/api/v1/projects/", "/no-such-page/", "/healthz"):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"


def test_hsts_and_secure_cookies_over_https(admin_user, project):
    """Over HTTPS: HSTS for a year, and session and CSRF cookies marked Secure and HttpOnly."""
    assert not settings.DEBUG
    client = Client()
    page = client.get("/accounts/login/", secure=True)
    assert page["Strict-Transport-Security"].startswith("max-age=31536000")
    assert page.cookies["csrftoken"]["secure"] is True
    token = page.cookies["csrftoken"].value
    login = client.post(
        "/accounts/login/",
        {"username": "alice", "password": "pw-alice-123", "csrfmiddlewaretoken": token},
        secure=True,
        HTTP_REFERER="https://testserver/accounts/login/",
    )
    assert login.status_code == 302
    session = login.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] is True and session["httponly"] is True


def test_no_hsts_over_plain_http(client):
    """HSTS is only ever sent on HTTPS responses (browsers ignore it elsewhere anyway)."""
    assert "Strict-Transport-Security" not in client.get("/accounts/login/")


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # seconds, not milliseconds: the whole suite and CI run it, test-fast does not
def test_check_deploy_is_clean_under_production_settings(tmp_path):
    """`manage.py check --deploy --fail-level WARNING` passes with production settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY"))
    }
    env.update(
        ABACUS_VAR_DIR=str(tmp_path),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="abacus.example.com",
        SECURE_COOKIES="true",
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        SECURE_PROXY_SSL_HEADER="true",
    )
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow  # seconds, not milliseconds: the whole suite and CI run it, test-fast does not
def test_check_deploy_flags_the_development_defaults(tmp_path):
    """Without production settings the same check fails (it is not vacuous)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY"))
    }
    env["ABACUS_VAR_DIR"] = str(tmp_path)
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stderr  # the development SECRET_KEY


def _documented_production_env() -> dict[str, str]:
    """The "Production needs at least" table of docs/operations.md section 2, as variables."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## 2. Settings", 1)[1].split("Optional:", 1)[0]
    env = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        value = re.search(r"`([^`]+)`", cells[1])
        for name in names:
            env[name] = value.group(1) if value else ""
    return env


def test_check_deploy_passes_with_the_settings_docs_operations_shows(tmp_path):
    """Every variable of the documented production table, as documented (a random key for the
    "50+ random characters"); the database and broker are not contacted by the check."""
    documented = _documented_production_env()
    assert {"DATABASE_URL", "SECRET_KEY", "SECURE_SSL_REDIRECT", "SECURE_COOKIES"} <= set(
        documented
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_"))
    }
    env.update(documented)
    env.update(ABACUS_VAR_DIR=str(tmp_path), SECRET_KEY=secrets.token_urlsafe(64))
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
