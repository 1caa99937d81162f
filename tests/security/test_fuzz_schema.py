"""Schemathesis: generated requests to every operation of the OpenAPI schema, with valid auth.

No answer may be a server error or break the schema's own description of the response. Path
parameters point at real objects (project "shop", experiment "checkout-v2", ...) so requests
reach the code behind the permission checks; bodies and query strings are generated.
Examples per operation: ABACUS_FUZZ_EXAMPLES (default 10, enough for CI; raise it locally).
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

from config.wsgi import application
from experiments.models import Role
from experiments.services import (
    api_key_create,
    environment_browser_update,
    membership_set,
    user_token_create,
)
from flags.services import flag_create, flag_environment_update, segment_create
from releases.services import release_create
from tests.factories import running_experiment

pytestmark = [pytest.mark.security]

EXAMPLES = int(os.environ.get("ABACUS_FUZZ_EXAMPLES", 10))
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)

SERVICE_PATHS = ("/api/v1/assign", "/api/v1/events")
BEACON_PATH = "/api/v1/events/beacon"
BROWSER_ORIGIN = "https://shop.example"
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
]


@pytest.fixture
def in_process():
    """Serve WSGI calls inside the test's transaction, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth(django_user_model, project, metrics, in_process):
    """Headers for a project admin (token) and an all-scopes service key, and real path values."""
    running_experiment(project)
    viewer = django_user_model.objects.create_user("vic", "vic@example.com", None)
    membership_set(project=project, user=viewer, role=Role.VIEWER)
    admin = project.memberships.get(role=Role.ADMIN).user
    service = api_key_create(project=project, name="fuzz", scopes=["assign", "ingest", "read"])
    production = project.environments.get(key="production")
    environment_browser_update(environment=production, origins=[BROWSER_ORIGIN], enabled=True)
    victim = api_key_create(project=project, name="victim", scopes=["read"])
    flag = flag_create(project=project, key="new-checkout", name="New checkout")
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    production = project.environments.get(key="production")
    flag_environment_update(flag=flag, environment=production, enabled=True)
    release = release_create(project=project, flag=flag, environment=production, variation="on")
    return {
        "user": {"Authorization": f"Token {user_token_create(user=admin).token}"},
        "service": {"Authorization": f"Bearer {service.secret}"},
        "browser_key": production.browser_key,
        "paths": {
            "project": "shop",
            "key": "checkout-v2",
            "username": "vic",
            "flag": "new-checkout",
            "segment": "staff",
            "environment": "staging",
            "key_id": victim.api_key.pk,
            "release_id": release.pk,
            "action": None,  # keep the generated lifecycle action
        },
    }


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_answers_within_its_schema_and_never_500(case, auth):
    """Every generated request gets a non-5xx answer that conforms to the documented schema."""
    if case.path_parameters:
        for name, value in auth["paths"].items():
            if name in case.path_parameters and value is not None:
                case.path_parameters[name] = value
        if "/metrics/{key}" in case.path:
            case.path_parameters["key"] = "purchase"
    if case.path.startswith(BEACON_PATH):  # a page's key and origin, so bodies get parsed
        case.query = {**(case.query or {}), "key": auth["browser_key"]}
        case.headers = {**(case.headers or {}), "Origin": BROWSER_ORIGIN}
    headers = auth["service"] if case.path.startswith(SERVICE_PATHS) else auth["user"]
    case.call_and_validate(headers=headers, checks=CHECKS)
