"""The notifications section: on the project settings page (admins) and the notifications page
(every member); admins add, switch off and remove channels, everyone sets their own email."""

import re

import pytest
from django.test import Client

from experiments.models import Role
from notifications.models import NotificationChannel, NotificationPreference
from notifications.services import notification_channel_create

pytestmark = pytest.mark.django_db


def login(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice(admin_user):
    return login(admin_user)


def test_the_settings_page_has_the_notifications_section(project, alice):
    notification_channel_create(
        project=project, kind="email", name="on-call", target="oncall@example.com"
    )
    response = alice.get("/p/shop/settings/")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="notifications"' in body and 'data-channel="on-call"' in body
    assert 'id="notification-channel-create"' in body and 'id="notification-preference"' in body
    assert 'value="release.step_advanced"' in body and 'name="back" value="settings"' in body
    assert "<script>" not in body and not re.search(r"\son[a-z]+=", body)  # CSP: no inline code
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_an_admin_adds_and_removes_a_channel_from_the_settings_page(project, alice):
    response = alice.post(
        "/p/shop/notifications/channels/",
        {
            "kind": "email",
            "name": "release managers",
            "target": "rm@example.com, lead@example.com",
            "events": ["release.rolled_back", "release.failed"],
            "back": "settings",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/p/shop/settings/"
    channel = NotificationChannel.objects.get()
    assert channel.events == ["release.rolled_back", "release.failed"]
    assert channel.target == "rm@example.com, lead@example.com"
    toggled = alice.post(f"/p/shop/notifications/channels/{channel.pk}/toggle/", {"back": "x"})
    assert toggled["Location"] == "/p/shop/notifications/"  # unknown back: the page itself
    channel.refresh_from_db()
    assert channel.enabled is False
    alice.post(f"/p/shop/notifications/channels/{channel.pk}/remove/", {"back": "settings"})
    assert not NotificationChannel.objects.exists()


def test_a_refused_channel_is_shown_next_to_its_field(project, alice):
    response = alice.post(
        "/p/shop/notifications/channels/",
        {"kind": "slack", "name": "x", "target": "http://127.0.0.1:8000/hook"},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="field-target"' in body and "ABACUS_WEBHOOK_ALLOWED_HOSTS" in body
    assert not NotificationChannel.objects.exists()


def test_every_member_sets_their_own_email_but_only_admins_manage_channels(project, make_member):
    notification_channel_create(project=project, kind="email", name="team", target="t@x.org")
    viewer = login(make_member("vic", Role.VIEWER))
    page = viewer.get("/p/shop/notifications/")
    body = page.content.decode()
    assert page.status_code == 200
    assert 'id="nav-notifications"' in body and 'data-channel="team"' in body
    assert 'id="notification-channel-create"' not in body and "Remove" not in body
    assert "You receive no email about this project until you save this form." in body
    saved = viewer.post(
        "/p/shop/notifications/me/", {"email": "on", "events": ["experiment.srm_detected"]}
    )
    assert saved.status_code == 302 and saved["Location"] == "/p/shop/notifications/"
    preference = NotificationPreference.objects.get()
    assert preference.email is True and preference.events == ["experiment.srm_detected"]
    # The settings page is for admins: a viewer asking to go back there lands here.
    again = viewer.post("/p/shop/notifications/me/", {"events": [], "back": "settings"})
    assert again["Location"] == "/p/shop/notifications/"
    preference.refresh_from_db()
    assert preference.email is False and preference.events == []
    # Channels are the admins'.
    channel = NotificationChannel.objects.get()
    refused = viewer.post("/p/shop/notifications/channels/", {"kind": "email", "name": "m"})
    assert refused.status_code == 403
    assert viewer.post(f"/p/shop/notifications/channels/{channel.pk}/remove/").status_code == 403
    assert NotificationChannel.objects.count() == 1


def test_unknown_events_in_the_form_are_refused(project, alice):
    response = alice.post("/p/shop/notifications/me/", {"email": "on", "events": ["nope"]})
    assert response.status_code == 400 and "nope" in response.content.decode()


def test_non_members_get_404_and_anonymous_is_sent_to_login(project, django_user_model):
    outsider = login(django_user_model.objects.create_user("otto", "o@example.com", "pw-1"))
    assert outsider.get("/p/shop/notifications/").status_code == 404
    assert outsider.post("/p/shop/notifications/me/", {"email": "on"}).status_code == 404
    response = Client().get("/p/shop/notifications/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
