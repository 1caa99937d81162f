"""Extreme values in every query and path parameter of the OpenAPI schema: never a 5xx.

The shapes that once made 500s: a NUL byte (PostgreSQL text cannot hold one), dates at the ends
of the calendar (0001-01-01, 9999-12-31: the day after the last one overflows) and numbers
beyond any sensible range (1e308, -1, 2**63: a bigint overflows). Each parameter of each
operation gets each shape alone; an answer is a 2xx, or a 4xx that names the parameter when it
is a 400. Generated from the schema, so a new parameter is covered the day it is documented.
"""

import json

import pytest
from django.test import Client

from experiments.models import Role
from experiments.services import api_key_create, membership_set, user_token_create
from flags.services import flag_create, flag_environment_update, segment_create
from releases.services import release_create
from tests.factories import running_experiment

pytestmark = [pytest.mark.security, pytest.mark.django_db]

NUL = "a\x00b"
EXTREMES = [
    NUL,
    "\x00",
    "0001-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+05:00",
    "1e308",
    "-1",
    str(2**63),
    str(-(2**63) - 1),
    "NaN",
]


@pytest.fixture
def site(django_user_model, project, metrics):
    running_experiment(project)
    viewer = django_user_model.objects.create_user("vic", "vic@example.com", None)
    membership_set(project=project, user=viewer, role=Role.VIEWER)
    admin = project.memberships.get(role=Role.ADMIN).user
    service = api_key_create(project=project, name="fuzz", scopes=["assign", "ingest", "read"])
    victim = api_key_create(project=project, name="victim", scopes=["read"])
    flag = flag_create(project=project, key="new-checkout", name="New checkout")
    segment_create(project=project, key="staff", name="Staff", include=["u1"])
    production = project.environments.get(key="production")
    flag_environment_update(flag=flag, environment=production, enabled=True)
    release = release_create(project=project, flag=flag, environment=production, variation="on")
    return {
        "user": f"Token {user_token_create(user=admin).token}",
        "service": f"Bearer {service.secret}",
        "paths": {
            "project": "shop",
            "key": "checkout-v2",
            "username": "vic",
            "flag": "new-checkout",
            "segment": "staff",
            "environment": "staging",
            "key_id": str(victim.api_key.pk),
            "action": "pause",
            "client_key": project.client_key,
            "release_id": str(release.pk),
        },
    }


def _operations(client: Client):
    schema = json.loads(client.get("/api/v1/schema/?format=json").content)
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "patch", "put", "delete"):
                yield path, method, op.get("parameters", [])


def _call(client, site, path, method, path_values, query):
    url = path
    for name, value in path_values.items():
        url = url.replace("{" + name + "}", value)
    if "/metrics/{key}" in path:
        url = url.replace("{key}", "purchase")
    auth = (
        site["service"] if path.startswith(("/api/v1/assign", "/api/v1/events")) else site["user"]
    )
    if query:
        from urllib.parse import urlencode

        url += "?" + urlencode(query)
    return client.generic(
        method.upper(),
        url,
        data=b"" if method in ("get", "delete") else b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=auth,
    )


def _check(response, where: str, name: str, value: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.content[:300]}"
    if response.status_code == 400 and value in (NUL, "\x00"):
        assert name in response.content.decode(), f"{where}: {response.content[:300]}"


def test_every_query_parameter_takes_extreme_values_without_a_server_error(site):
    client = Client(raise_request_exception=False)
    tried = 0
    for path, method, params in _operations(client):
        if method != "get":
            continue
        for param in (p for p in params if p["in"] == "query"):
            for value in EXTREMES:
                response = _call(client, site, path, method, site["paths"], {param["name"]: value})
                _check(response, f"GET {path}?{param['name']}={value!r}", param["name"], value)
                tried += 1
    assert tried > 50  # the schema documents the query parameters


def test_every_path_parameter_takes_extreme_values_without_a_server_error(site):
    client = Client(raise_request_exception=False)
    tried = 0
    for path, method, params in _operations(client):
        for param in (p for p in params if p["in"] == "path"):
            for value in EXTREMES:
                values = dict(site["paths"], **{param["name"]: value.replace("/", "")})
                response = _call(client, site, path, method, values, {})
                _check(response, f"{method.upper()} {path} {param['name']}={value!r}", "", value)
                tried += 1
    assert tried > 50


@pytest.mark.parametrize(
    "url,field",
    [
        ("/api/v1/projects/shop/experiments/?q=%00", "q"),
        ("/api/v1/projects/shop/experiments/?owner=al%00ice", "owner"),
        ("/api/v1/projects/shop/results/export?until=9999-12-31", "until"),
        ("/api/v1/projects/shop/results/export?since=9999-12-31T23:00:00-05:00", "since"),
    ],
)
def test_reported_query_shapes_are_a_400_naming_the_parameter(site, url, field):
    response = Client().get(url, HTTP_AUTHORIZATION=site["user"])
    assert response.status_code == 400, response.content[:300]
    assert response.json()["field"] == field


def test_nul_in_a_member_name_or_the_features_key_is_a_400_naming_it(site, admin_user):
    client = Client()
    r = client.delete("/api/v1/projects/shop/members/v%00ic/", HTTP_AUTHORIZATION=site["user"])
    assert r.status_code == 400 and r.json()["field"] == "username", r.content
    r = client.patch(
        "/api/v1/projects/shop/members/v%00ic/",
        {"role": "viewer"},
        content_type="application/json",
        HTTP_AUTHORIZATION=site["user"],
    )
    assert r.status_code == 400 and r.json()["field"] == "username", r.content
    r = client.post(
        "/api/v1/projects/shop/members/",
        {"username": "v\x00ic", "role": "viewer"},
        content_type="application/json",
        HTTP_AUTHORIZATION=site["user"],
    )
    assert r.status_code == 400 and "username" in r.json(), r.content
    r = client.get(f"/api/features/{site['paths']['client_key']}%00")
    assert r.status_code == 400 and r.json()["field"] == "client_key", r.content
    client.force_login(admin_user)
    page = client.get("/p/shop/?q=%00")
    assert page.status_code == 400 and "&#x27;q&#x27;" in page.content.decode()
    page = client.post("/p/shop/settings/members/v%00ic/remove/")
    assert page.status_code == 400 and "&#x27;username&#x27;" in page.content.decode()
