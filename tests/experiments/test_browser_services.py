"""Environments' browser keys and allowed origins (experiments/services/browser.py): origins
are checked and normalised as browsers send them, keys turn on, rotate and off, audited."""

import pytest

from core.errors import DomainError
from experiments.models import AuditLog, Environment
from experiments.services import (
    check_origins,
    environment_browser_key_rotate,
    environment_browser_update,
)
from experiments.services.browser import MAX_ORIGINS

pytestmark = pytest.mark.django_db


def test_origins_are_normalised_as_browsers_send_them():
    assert check_origins(
        [
            "HTTPS://Shop.Example:443/",
            "http://localhost:3000",
            "https://shop.example",
            "http://[::1]:8080",
            "https://bücher.example",
            " http://127.0.0.1:80 ",
        ]
    ) == [
        "https://shop.example",
        "http://localhost:3000",
        "http://[::1]:8080",
        "https://xn--bcher-kva.example",
        "http://127.0.0.1",
    ]


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "null",
        "",
        "shop.example",
        "ftp://shop.example",
        "https://shop.example/checkout",
        "https://shop.example?x=1",
        "https://user@shop.example",
        "https://*.shop.example",
        "https://shop.example:99999",
        "javascript:alert(1)",
        "https://" + "a" * 300 + ".example",
        7,
    ],
)
def test_anything_but_an_origin_is_refused_naming_origins(origin):
    with pytest.raises(DomainError) as refused:
        check_origins([origin])
    assert refused.value.field == "origins"


def test_origins_are_a_bounded_list():
    with pytest.raises(DomainError, match="a list"):
        check_origins("https://shop.example")
    too_many = [f"https://s{i}.example" for i in range(MAX_ORIGINS + 1)]
    with pytest.raises(DomainError, match=f"At most {MAX_ORIGINS}"):
        check_origins(too_many)


def test_browser_events_are_off_until_turned_on(project):
    env = Environment.objects.get(project=project, key="production")
    assert env.browser_key is None and env.browser_origins == []
    environment_browser_update(environment=env, origins=["https://shop.example"])
    assert env.browser_key is None  # origins alone turn nothing on
    environment_browser_update(environment=env, enabled=True)
    assert env.browser_key.startswith("web-") and len(env.browser_key) > 20
    key = env.browser_key
    environment_browser_update(environment=env, enabled=True)
    assert env.browser_key == key  # turning on twice keeps the key


def test_rotation_replaces_the_key_and_turning_off_removes_it(project, admin_user):
    env = Environment.objects.get(project=project, key="staging")
    environment_browser_update(environment=env, enabled=True, actor=admin_user)
    old = env.browser_key
    environment_browser_key_rotate(environment=env, actor=admin_user)
    env.refresh_from_db()
    assert env.browser_key not in (None, old)
    environment_browser_update(environment=env, enabled=False, actor=admin_user)
    env.refresh_from_db()
    assert env.browser_key is None
    actions = list(
        AuditLog.objects.filter(project=project, target="environment:staging")
        .order_by("id")
        .values_list("action", "actor_label")
    )
    assert actions == [
        ("environment.browser.update", "alice"),
        ("environment.browser.rotate_key", "alice"),
        ("environment.browser.update", "alice"),
    ]


def test_keys_differ_across_environments(project):
    keys = set()
    for env in Environment.objects.filter(project=project):
        environment_browser_update(environment=env, enabled=True)
        keys.add(env.browser_key)
    assert len(keys) == 3
