"""notifications.deliver: Slack-compatible incoming-webhook messages (through core.egress,
retried with backoff, every attempt counted) and email through Django's email backend."""

import pytest
from django.core import mail

from experiments.models import Role
from notifications.models import ChannelKind, DeliveryStatus, NotificationChannel
from notifications.models import NotificationDelivery as Delivery
from notifications.services import (
    notification_channel_create,
    notification_preference_set,
    notify,
)
from notifications.tasks import deliver

pytestmark = pytest.mark.django_db


def slack_channel(project, url, **fields):
    return notification_channel_create(
        project=project, kind="slack", name="#releases", target=url, **fields
    )


def send(project, django_capture_on_commit_callbacks, **fields):
    """notify, then the on-commit callbacks (which queue the task: eager here)."""
    with django_capture_on_commit_callbacks(execute=True):
        return notify(
            project=project,
            event=fields.pop("event", "release.rolled_back"),
            title=fields.pop("title", "Release checkout-v2 rolled back"),
            text=fields.pop("text", "Errors rose by 40% at step 2 (25%); the flag is off again."),
            link=fields.pop("link", "/p/shop/releases/3/"),
            **fields,
        )


def test_a_slack_message_has_text_and_blocks_with_title_text_and_link(
    project, slack, eager, django_capture_on_commit_callbacks
):
    slack_channel(project, slack.url)
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    [(headers, body)] = slack.received
    assert headers["Content-Type"] == "application/json"
    link = "http://localhost:8000/p/shop/releases/3/"
    assert body["text"] == (
        "Release checkout-v2 rolled back: Errors rose by 40% at step 2 (25%); the flag is off "
        f"again. {link}"
    )
    section, context = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == (
        "*Release checkout-v2 rolled back*\n"
        "Errors rose by 40% at step 2 (25%); the flag is off again.\n"
        f"<{link}|Open in abacus>"
    )
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == "abacus · shop · Release rolled back"
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
    assert delivery.sent_at is not None and delivery.last_error == ""


def test_slack_control_characters_are_escaped(
    project, slack, eager, django_capture_on_commit_callbacks
):
    slack_channel(project, slack.url)
    send(
        project,
        django_capture_on_commit_callbacks,
        title="<!channel> A & B",
        text="x < y > z",
        link="",
    )
    [(_, body)] = slack.received
    assert body["blocks"][0]["text"]["text"] == "*&lt;!channel&gt; A &amp; B*\nx &lt; y &gt; z"


def test_a_failing_receiver_is_retried_and_every_attempt_recorded(
    project, slack, eager, django_capture_on_commit_callbacks
):
    slack.statuses.extend([500, 503])
    slack_channel(project, slack.url)
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    assert len(slack.received) == 3
    assert len({str(body) for _, body in slack.received}) == 1  # the same message each time
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 3


def test_a_receiver_that_keeps_failing_ends_failed_with_its_error(
    project, slack, eager, django_capture_on_commit_callbacks
):
    slack.statuses.extend([500] * 20)
    slack_channel(project, slack.url)
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == deliver.max_retries + 1 == len(slack.received)
    assert delivery.last_error.startswith("HTTP 500: invalid_payload")


def test_a_network_error_is_retried(
    project, allow_local, eager, django_capture_on_commit_callbacks
):
    slack_channel(project, "http://127.0.0.1:9/closed")
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == deliver.max_retries + 1
    assert "ConnectionError" in delivery.last_error


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/services/x", "http://localhost:{port}/", "http://10.0.0.7/hook"],
)
def test_a_private_address_is_refused_at_send_time_and_not_retried(
    url, project, slack, settings, eager
):
    """A channel saved while an address was allowed (or a name that now resolves inside the
    network) is refused by the connection itself."""
    port = slack.url.split(":")[2].split("/")[0]
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    channel = NotificationChannel.objects.create(
        project=project, kind=ChannelKind.SLACK, name="x", target=url.format(port=port)
    )
    delivery = Delivery.objects.create(
        project=project,
        channel=channel,
        event="release.held",
        kind=ChannelKind.SLACK,
        target=channel.target,
        title="t",
    )
    assert deliver.apply(args=[delivery.pk]).get() is False
    assert slack.received == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert delivery.last_error.startswith("Refused: ")
    assert "ABACUS_WEBHOOK_ALLOWED_HOSTS" in delivery.last_error


def test_a_sent_message_is_not_sent_twice(
    project, slack, eager, django_capture_on_commit_callbacks
):
    slack_channel(project, slack.url)
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    assert deliver.apply(args=[delivery_id]).get() is True  # e.g. a redelivered task
    assert len(slack.received) == 1


def test_email_goes_through_djangos_backend_to_channels_and_people(
    project, make_member, eager, django_capture_on_commit_callbacks
):
    notification_channel_create(
        project=project, kind="email", name="on-call", target="a@example.com, b@example.com"
    )
    pm = make_member("pam", Role.EDITOR)
    notification_preference_set(user=pm, project=project, events=["release.rolled_back"])
    ids = send(project, django_capture_on_commit_callbacks)
    assert len(ids) == 2
    assert sorted(m.to for m in mail.outbox) == [["a@example.com", "b@example.com"], [pm.email]]
    message = mail.outbox[0]
    assert message.subject == "[abacus shop] Release checkout-v2 rolled back"
    assert "Errors rose by 40%" in message.body
    assert "Open in abacus: http://localhost:8000/p/shop/releases/3/" in message.body
    assert message.from_email == "abacus@localhost"
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SENT}


def test_a_mail_server_error_is_retried(
    project, eager, monkeypatch, django_capture_on_commit_callbacks
):
    import smtplib

    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) < 3:
            raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
        return 1

    monkeypatch.setattr("notifications.sending.send_mail", flaky)
    notification_channel_create(project=project, kind="email", name="t", target="t@example.com")
    [delivery_id] = send(project, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 3


def test_email_settings_default_to_the_console_and_switch_to_smtp(monkeypatch):
    """Settings read the environment: no EMAIL_HOST, the console backend; with one, SMTP."""
    import importlib

    import config.settings as module

    try:
        monkeypatch.delenv("EMAIL_HOST", raising=False)
        monkeypatch.delenv("ABACUS_EMAIL_FROM", raising=False)
        console = importlib.reload(module)
        assert console.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"
        monkeypatch.setenv("EMAIL_HOST", "smtp.example.com")
        monkeypatch.setenv("EMAIL_PORT", "587")
        monkeypatch.setenv("EMAIL_USE_TLS", "true")
        monkeypatch.setenv("ABACUS_EMAIL_FROM", "abacus@example.com")
        smtp = importlib.reload(module)
        assert smtp.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
        assert (smtp.EMAIL_HOST, smtp.EMAIL_PORT, smtp.EMAIL_USE_TLS) == (
            "smtp.example.com",
            587,
            True,
        )
        assert smtp.DEFAULT_FROM_EMAIL == "abacus@example.com"
    finally:
        monkeypatch.undo()
        importlib.reload(module)
