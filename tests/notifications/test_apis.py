"""The notifications REST API: channels (admins write, members read, Slack URLs masked for
non-admins), each person's own preferences; bad input is a 400 naming the field."""

import pytest
from rest_framework.test import APIClient

from experiments.models import AuditLog, Role
from notifications.models import EVENTS, NotificationChannel, NotificationPreference

pytestmark = pytest.mark.django_db

CHANNELS = "/api/v1/projects/shop/notification-channels/"
ME = "/api/v1/projects/shop/notification-preferences/me"
SLACK = "https://hooks.slack.com/services/T000/B000/secretpart"


@pytest.fixture(autouse=True)
def slack_resolves_publicly(monkeypatch):
    """hooks.slack.com resolves to a public address without asking DNS (no network in tests);
    every other name resolves as usual."""
    import ipaddress

    from core import egress

    real = egress.resolve

    def resolve(host, port):
        if host == "hooks.slack.com":
            return [ipaddress.ip_address("52.1.2.3")]
        return real(host, port)

    monkeypatch.setattr(egress, "resolve", resolve)


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def create(api, **fields):
    body = {"kind": "slack", "name": "#releases", "target": SLACK, **fields}
    return api.post(CHANNELS, body, format="json")


def test_an_admin_creates_lists_changes_and_removes_a_channel(api, project):
    response = create(api, events=["release.rolled_back", "release.started"])
    assert response.status_code == 201, response.json()
    channel = response.json()
    # Events come back in the catalogue's order.
    assert channel["events"] == ["release.started", "release.rolled_back"]
    assert channel["target"] == SLACK and channel["enabled"] is True
    assert [c["id"] for c in api.get(CHANNELS).json()] == [channel["id"]]
    url = f"{CHANNELS}{channel['id']}/"
    changed = api.patch(url, {"enabled": False, "events": []}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert changed.json()["events"] == []
    assert api.get(url).json()["enabled"] is False
    assert api.delete(url).status_code == 204
    assert not NotificationChannel.objects.exists()
    actions = list(AuditLog.objects.filter(project=project).values_list("action", flat=True))
    for action in ("create", "update", "delete"):
        assert f"notification_channel.{action}" in actions


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "sms"}, "kind"),
        ({"name": ""}, "name"),
        ({"events": ["release.exploded"]}, "events"),
        ({"events": "release.started"}, "events"),
        ({"target": "ftp://hooks.example.com/x"}, "target"),
        ({"target": "http://127.0.0.1:8080/x"}, "target"),
        ({"target": "http://localhost/x"}, "target"),
        ({"target": "http://169.254.169.254/latest/"}, "target"),
        ({"kind": "email", "target": "pam@example.com, not-an-address"}, "target"),
        ({"kind": "email", "target": " , "}, "target"),
        ({"target": ""}, "target"),
    ],
)
def test_bad_channels_are_a_400_naming_the_field(api, project, body, field):
    response = create(api, **body)
    assert response.status_code == 400
    answer = response.json()
    assert answer.get("field") == field or field in answer, answer
    assert not NotificationChannel.objects.exists()


def test_the_kind_of_a_channel_is_fixed(api, project):
    channel = create(api, kind="email", target="a@example.com").json()
    response = api.patch(f"{CHANNELS}{channel['id']}/", {"kind": "slack"}, format="json")
    assert response.status_code == 400 and "kind" in response.json()
    bad = api.patch(f"{CHANNELS}{channel['id']}/", {"target": "nope"}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "target"


def test_an_allow_listed_internal_receiver_is_accepted(api, project, settings):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert create(api, target="http://127.0.0.1:8080/hook").status_code == 201


@pytest.mark.parametrize("role", [Role.EDITOR, Role.ANALYST, Role.VIEWER])
def test_only_admins_write_channels_and_members_see_slack_urls_masked(
    api, project, make_member, role
):
    channel = create(api).json()
    member = client_for(make_member("mia", role))
    assert create(member).status_code == 403
    url = f"{CHANNELS}{channel['id']}/"
    assert member.patch(url, {"enabled": False}, format="json").status_code == 403
    assert member.delete(url).status_code == 403
    [seen] = member.get(CHANNELS).json()
    assert seen["target"] == "https://hooks.slack.com/…" and "secretpart" not in str(seen)
    assert member.get(url).json()["target"] == "https://hooks.slack.com/…"
    assert NotificationChannel.objects.get().enabled is True


def test_non_members_get_404(project, django_user_model):
    outsider = client_for(django_user_model.objects.create_user("otto", "o@example.com", "pw-1"))
    assert outsider.get(CHANNELS).status_code == 404
    assert outsider.get(ME).status_code == 404
    assert outsider.put(ME, {"email": True}, format="json").status_code == 404
    assert APIClient().get(CHANNELS).status_code in (401, 403)


def test_a_member_reads_and_sets_their_own_preferences(project, make_member):
    viewer = make_member("vic", Role.VIEWER)
    client = client_for(viewer)
    first = client.get(ME).json()
    assert first == {
        "events": [],
        "email": False,
        "address": "vic@example.com",
        "known_events": list(EVENTS),
    }
    # A first save without events chooses every event.
    assert client.put(ME, {"email": True}, format="json").json()["events"] == list(EVENTS)
    saved = client.put(ME + "/", {"events": ["release.held"], "email": True}, format="json")
    assert saved.status_code == 200
    assert saved.json()["events"] == ["release.held"] and saved.json()["email"] is True
    preference = NotificationPreference.objects.get(user=viewer)
    assert preference.events == ["release.held"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["nope"]}, "events"),
        ({"events": [1, 2]}, "events"),
        ({"email": "maybe"}, "email"),
    ],
)
def test_bad_preferences_are_a_400_naming_the_field(api, project, body, field):
    response = api.put(ME, body, format="json")
    assert response.status_code == 400
    answer = response.json()
    assert answer.get("field") == field or field in answer, answer
