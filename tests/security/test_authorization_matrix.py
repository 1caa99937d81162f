"""The authorization matrix: every endpoint and page x every kind of caller x every method.

Endpoints come from Django's URL resolver, not from a list, and each is checked against the
policy in tests/security/policy.py: an endpoint that no rule covers fails the test, so a new
endpoint cannot ship without a decision on who may call it. Each request runs in a savepoint
that is rolled back, so a DELETE or a lifecycle action in one cell does not change the next.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from experiments.models import Role
from experiments.services import (
    api_key_create,
    api_key_revoke,
    environment_browser_update,
    membership_set,
    metric_create,
    project_create,
)
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
from tests.security.endpoints import MissingFixture, all_endpoints, concrete_urls
from tests.security.policy import (
    ALL_METHODS,
    PAGE_METHODS,
    PRINCIPALS,
    SAFE,
    Principal,
    Public,
    Staff,
    rule_for,
)

pytestmark = [pytest.mark.security, pytest.mark.django_db]

LOGIN_PAGES = (settings.LOGIN_URL, "/admin/login/")
ORIGIN = "https://shop.example"  # the browser key's page


@dataclass
class World:
    values: dict[str, str]  # URL parameter -> fixture value
    clients: dict[str, Client]


@pytest.fixture
def world(django_user_model, settings) -> World:
    """Two projects, a member of each role, a superuser, API keys of every kind and a browser
    key. The matrix checks who may call what, not rate limits: every cell comes from one
    address, so the browser endpoint's per-address limit is off."""
    settings.ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE = 0
    # No passwords (force_login needs none): hashing them would dominate the setup time.
    root = django_user_model.objects.create_superuser("root", "root@example.com", None)
    owner = django_user_model.objects.create_user("owner", "owner@example.com", None)
    shop = project_create(slug="shop", name="Shop", owner=owner)
    other = project_create(slug="other", name="Other", owner=owner)
    metric_create(
        project=shop, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    running_experiment(shop)
    users = {"superuser": root}
    for role in Role.values:
        users[role] = django_user_model.objects.create_user(role, f"{role}@example.com", None)
        membership_set(project=shop, user=users[role], role=role)
    users["non-member"] = django_user_model.objects.create_user("stranger", "s@example.com", None)
    membership_set(project=other, user=users["non-member"], role=Role.ADMIN)

    clients: dict[str, Client] = {}
    first_key_id = None
    for who in PRINCIPALS:
        client = Client(raise_request_exception=False)
        if who.kind == "user":
            client.force_login(users[who.name])
        elif who.kind == "browser":
            production = shop.environments.get(key="production")
            environment_browser_update(environment=production, origins=[ORIGIN], enabled=True)
            client.defaults["HTTP_ORIGIN"] = ORIGIN
            client.query = f"key={production.browser_key}"  # type: ignore[attr-defined]
        elif who.kind == "key":
            created = api_key_create(
                project=shop if who.own_project else other, name=who.name, scopes=who.scopes
            )
            if who.revoked:
                api_key_revoke(api_key=created.api_key)
            first_key_id = first_key_id or created.api_key.pk
            client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {created.secret}"
        clients[who.name] = client
    flag_values = _flag_fixtures(shop, owner)
    channel = notification_channel_create(
        project=shop, kind="email", name="team", target="team@example.com"
    )
    values = {
        **flag_values,
        "channel_id": str(channel.pk),
        "holdout_id": str(holdout_create(project=shop, name="H", share=0.05).pk),
        "project": "shop",
        "key": "checkout-v2",
        "layer": "search",
        "metric_key": "purchase",
        "key_id": str(first_key_id),
        "username": "viewer",
        "client_key": shop.client_key,
        # The Django admin's own parameters.
        "object_id": str(shop.pk),
        "id": str(root.pk),
        "content_type_id": "1",
        "url": "no-such-admin-page/",
    }
    return World(values=values, clients=clients)


def _flag_fixtures(shop, owner) -> dict[str, str]:
    """A flag, a segment, a scheduled change (staging), a pending change request of production
    made by someone other than the callers, and a running release in staging."""
    flag = flag_create(project=shop, key="new-checkout", name="New checkout")
    segment_create(project=shop, key="staff", name="Staff", include=["u1"])
    staging = shop.environments.get(key="staging")
    production = shop.environments.get(key="production")
    at = timezone.now() + timedelta(days=1)
    scheduled = scheduled_change_create(
        flag=flag, environment=staging, at=at, change={"enabled": True}
    )
    request = change_request_create(
        flag=flag, environment=production, change={"enabled": True}, actor=owner
    )
    # A running release in staging (editors may move it; production would need an admin).
    flag_environment_update(flag=flag, environment=staging, enabled=True)
    release = release_create(project=shop, flag=flag, environment=staging, variation="on")
    return {
        "flag": flag.key,
        "segment": "staff",
        "environment": "staging",
        "schedule_id": str(scheduled.pk),
        "request_id": str(request.pk),
        "release_id": str(release.pk),
    }


def _refused(response: HttpResponse) -> bool:
    if response.status_code in (401, 403, 404, 405):
        return True
    location = response.get("Location", "")
    return response.status_code == 302 and location.startswith(LOGIN_PAGES)


# Bookkeeping writes that change nothing a caller is refused: sessions, a key's last use.
_BOOKKEEPING = re.compile(r'django_session|UPDATE "experiments_apikey" SET "last_used_at"')
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _call(client: Client, method: str, url: str) -> tuple[HttpResponse, bool]:
    """One request, rolled back afterwards, and whether it wrote to the database.

    Cookies are restored afterwards so that a logout in one cell does not leak into the next.
    """
    cookies = client.cookies
    client.cookies = type(cookies)(cookies)
    if query := getattr(client, "query", ""):  # the browser key, on every URL
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    is_api = url.startswith("/api/")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        response = client.generic(
            method,
            url,
            data="{}" if is_api and method != "GET" else "",
            content_type="application/json" if is_api else "application/x-www-form-urlencoded",
        )
        transaction.set_rollback(True)
    client.cookies = cookies
    sql = [q["sql"] for q in queries.captured_queries]
    wrote = any(_WRITE.match(q) and not _BOOKKEEPING.search(q) for q in sql)
    return response, wrote


def test_every_endpoint_is_classified_and_buildable(world):
    """Every URL pattern matches a policy rule and has fixture values for its parameters."""
    problems = []
    for endpoint in all_endpoints():
        if rule_for(endpoint.template) is None:
            problems.append(f"unclassified endpoint {endpoint.template!r} ({endpoint.view})")
        try:
            concrete_urls(endpoint, world.values)
        except MissingFixture as exc:
            problems.append(f"unclassified endpoint: {exc}")
    assert not problems, "add a rule in tests/security/policy.py:\n" + "\n".join(problems)


def _check(world: World, who: Principal) -> tuple[int, list[str]]:
    """The cells of one caller's column that differ from the policy."""
    client = world.clients[who.name]
    mismatches = []
    cells = 0
    for endpoint in all_endpoints():
        rule = rule_for(endpoint.template)
        if rule is None:
            continue  # reported by test_every_endpoint_is_classified_and_buildable
        try:
            urls = concrete_urls(endpoint, world.values)
        except MissingFixture:
            continue
        methods = ALL_METHODS if endpoint.template.startswith("api/") else PAGE_METHODS
        if isinstance(rule.policy, Staff) and not who.superuser:
            methods = ("GET",)  # the admin turns away non-staff before it looks at the method
        for url in urls:
            for method in methods:
                cells += 1
                response, wrote = _call(client, method, url)
                status = response.status_code
                where = f"{who.name}: {method} {url} [{rule.policy.name}] -> {status}"
                if status >= 500:
                    mismatches.append(f"{where}: server error")
                    continue
                expected = rule.policy.expect(who, method)
                if isinstance(rule.policy, Public):
                    if status in (401, 403):
                        mismatches.append(f"{where}: a public endpoint refused")
                    continue
                refused = _refused(response)
                if expected == "deny" and not refused:
                    if method not in SAFE and not wrote:
                        continue  # a read-only view answering any method: nothing changed
                    what = "and wrote to the database" if wrote else "and answered"
                    mismatches.append(f"{where}: expected deny, was let in {what}")
                elif expected == "allow" and refused and status != 405:
                    if isinstance(rule.policy, Staff) and status in (403, 404):
                        continue  # the admin refuses malformed requests itself (autocomplete)
                    mismatches.append(f"{where}: expected allow, was refused")
    return cells, mismatches


@pytest.mark.slow  # about 50 s on a busy 2-core machine: `make test` and CI run it, test-fast not
def test_matrix(world):
    """Each endpoint and method answers each caller as the policy says: allowed or refused.

    Callers: anonymous, a superuser, a member of each role, a member of another project only,
    API keys of each scope, of another project, and revoked, and a public browser key.
    """
    total, mismatches = 0, []
    for who in PRINCIPALS:
        cells, wrong = _check(world, who)
        assert cells > 0, who.name
        total += cells
        mismatches.extend(wrong)
    assert not mismatches, f"{len(mismatches)} of {total} cells differ from policy.py:\n" + (
        "\n".join(mismatches)
    )


def test_method_not_offered_is_refused_to_everyone(world):
    """A method an endpoint does not offer (405 for its allowed callers) succeeds for no one."""
    client = world.clients["superuser"]
    offered: dict[tuple[str, str], bool] = {}
    for endpoint in all_endpoints():
        rule = rule_for(endpoint.template)
        if rule is None or isinstance(rule.policy, Public | Staff) or not endpoint.params:
            continue
        for url in concrete_urls(endpoint, world.values):
            for method in ALL_METHODS:
                offered[(method, url)] = _call(client, method, url)[0].status_code != 405
    assert any(offered.values()) and not all(offered.values())
    key_client = world.clients["key:all"]
    for (method, url), is_offered in offered.items():
        if not is_offered:
            response, wrote = _call(key_client, method, url)
            assert _refused(response), f"{method} {url} -> {response.status_code}"
            assert not wrote, f"{method} {url} wrote to the database"
