"""Webhooks: signed with the project's secret, retried with backoff, every attempt recorded,
and sent only to addresses outside abacus's own network unless the operator allows them."""

import hashlib
import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.models import DeliveryStatus, WebhookDelivery
from analysis.tasks import deliver_webhook
from analysis.webhooks import SIGNATURE_HEADER, webhook_enqueue, webhook_signature
from experiments.models import Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def allow_local(settings):
    """The local receivers below are deliberate internal receivers: allow-listed, as an
    operator would (ABACUS_WEBHOOK_ALLOWED_HOSTS)."""
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def receiver(allow_local):
    """A local HTTP server that records each POST and answers the queued status codes."""
    received: list[tuple[dict, bytes]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()
            self.wfile.write(b"thanks")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/abacus"
    yield SimpleNamespace(url=url, received=received, statuses=statuses)
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast_retries(settings):
    settings.ABACUS_WEBHOOK_RETRY_SECONDS = 0


def enqueue(project, url, django_capture_on_commit_callbacks):
    Project.objects.filter(pk=project.pk).update(webhook_url=url)
    project.refresh_from_db()
    with django_capture_on_commit_callbacks() as callbacks:
        delivery = webhook_enqueue(
            project=project,
            event="experiment.rolled_back",
            payload={"experiment": "checkout-v2", "reason": "errors rose"},
        )
    assert len(callbacks) == 1  # handed to the task only once the transaction commits
    return delivery


def test_no_url_no_message(project):
    assert webhook_enqueue(project=project, event="x", payload={}) is None
    assert not WebhookDelivery.objects.exists()


def test_a_delivery_is_signed_with_the_projects_secret(
    project, receiver, django_capture_on_commit_callbacks
):
    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    assert deliver_webhook.apply(args=[delivery.pk]).get() is True
    [(headers, body)] = receiver.received
    expected = hmac.new(project.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers[SIGNATURE_HEADER] == webhook_signature(project.webhook_secret, body)
    assert headers["X-Abacus-Event"] == "experiment.rolled_back"
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)
    assert message == {
        "id": delivery.pk,
        "event": "experiment.rolled_back",
        "project": project.slug,
        "experiment": "checkout-v2",
        "reason": "errors rose",
    }
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert delivery.last_status_code == 200 and delivery.delivered_at is not None


def test_failed_attempts_are_retried_with_the_same_bytes(
    project, receiver, fast_retries, django_capture_on_commit_callbacks
):
    receiver.statuses.extend([500, 503])
    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    deliver_webhook.apply(args=[delivery.pk])
    bodies = [body for _, body in receiver.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    signatures = {headers[SIGNATURE_HEADER] for headers, _ in receiver.received}
    assert len(signatures) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 3
    assert delivery.last_error == ""


def test_a_receiver_that_never_answers_ends_failed_with_its_error(
    project, fast_retries, allow_local, django_capture_on_commit_callbacks
):
    delivery = enqueue(project, "http://127.0.0.1:9/closed", django_capture_on_commit_callbacks)
    assert deliver_webhook.apply(args=[delivery.pk]).get() is False
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == deliver_webhook.max_retries + 1
    assert "ConnectionError" in delivery.last_error


def test_a_delivered_message_is_not_sent_twice(
    project, receiver, django_capture_on_commit_callbacks
):
    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    deliver_webhook.apply(args=[delivery.pk])
    deliver_webhook.apply(args=[delivery.pk])  # e.g. a redelivered task
    assert len(receiver.received) == 1


# --- where deliveries may go (core.egress) --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hooks/abacus",
        "http://localhost:{port}/",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_delivery_inside_the_network_is_refused_and_noted_not_retried(
    url, project, receiver, settings, fast_retries, django_capture_on_commit_callbacks
):
    """The finding: a project admin's webhook URL made the worker POST to loopback services
    and the metadata endpoint, retry, and store part of the answer."""
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    port = receiver.url.split(":")[2].split("/")[0]
    delivery = enqueue(project, url.format(port=port), django_capture_on_commit_callbacks)
    assert deliver_webhook.apply(args=[delivery.pk]).get() is False
    assert receiver.received == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert delivery.last_error.startswith("Refused: ")
    assert "ABACUS_WEBHOOK_ALLOWED_HOSTS" in delivery.last_error
    assert delivery.last_status_code is None


def test_the_signing_secret_is_read_at_send_time_so_rotation_applies(
    project, receiver, django_capture_on_commit_callbacks
):
    from experiments.services import project_webhook_secret_rotate

    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    new_secret = project_webhook_secret_rotate(project=project, actor=None)
    deliver_webhook.apply(args=[delivery.pk])
    [(headers, body)] = receiver.received
    assert headers[SIGNATURE_HEADER] == webhook_signature(new_secret, body)


def _docs_verify():
    """The receiver's verification code, exactly as docs/operations.md shows it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    match = re.search(r"<!-- webhook-verify -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/operations.md lost its webhook verification example"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 12
    namespace: dict = {}
    exec(compile(code, "docs/operations.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]


def test_the_documented_verification_accepts_a_real_delivery_and_nothing_else(
    project, receiver, django_capture_on_commit_callbacks
):
    verify = _docs_verify()
    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    deliver_webhook.apply(args=[delivery.pk])
    [(headers, body)] = receiver.received
    secret = project.webhook_secret
    assert verify(secret, body, headers[SIGNATURE_HEADER]) is True
    assert verify(secret, body + b" ", headers[SIGNATURE_HEADER]) is False
    assert verify("another-secret", body, headers[SIGNATURE_HEADER]) is False
    assert verify(secret, body, "sha256=" + "0" * 64) is False


def test_a_broker_outage_leaves_the_delivery_pending_and_the_sweep_sends_it_later(
    project, receiver, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    """The rollback that sent it is not disturbed; 10 minutes on, the beat's sweep queues it
    again; a day on, it is given up, failed with a note; one being retried is left alone."""
    from datetime import timedelta

    from django.utils import timezone

    from analysis.webhooks import webhook_deliveries_resend
    from core.deliveries import NEVER_QUEUED

    queued = []
    monkeypatch.setattr(deliver_webhook, "delay", lambda *a: (_ for _ in ()).throw(OSError("down")))
    Project.objects.filter(pk=project.pk).update(webhook_url=receiver.url)
    project.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        lost = webhook_enqueue(project=project, event="experiment.rolled_back", payload={})
    assert "stays pending" in caplog.text
    stale = webhook_enqueue(project=project, event="experiment.rolled_back", payload={})
    retried = webhook_enqueue(project=project, event="experiment.rolled_back", payload={})
    WebhookDelivery.objects.filter(pk=stale.pk).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    WebhookDelivery.objects.filter(pk=retried.pk).update(
        attempts=1, created_at=timezone.now() - timedelta(hours=1)
    )
    monkeypatch.setattr(deliver_webhook, "delay", lambda delivery_id: queued.append(delivery_id))

    assert webhook_deliveries_resend() == (0, 1)  # the lost one is only a few seconds old
    later = timezone.now() + timedelta(minutes=11)
    assert webhook_deliveries_resend(now=later) == (1, 0)
    assert queued == [lost.pk]
    stale.refresh_from_db()
    assert (stale.status, stale.last_error) == (DeliveryStatus.FAILED, NEVER_QUEUED)
    deliver_webhook.apply(args=[lost.pk])
    lost.refresh_from_db()
    assert lost.status == DeliveryStatus.DELIVERED and len(receiver.received) == 1


def test_of_two_tasks_for_one_delivery_one_sends(
    project, receiver, read_before, django_capture_on_commit_callbacks
):
    """A task that read the delivery before another claimed its attempt sends nothing."""
    delivery = enqueue(project, receiver.url, django_capture_on_commit_callbacks)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=1)  # the other task's claim
    read_before(WebhookDelivery, attempts=0)
    deliver_webhook.apply(args=[delivery.pk])
    assert receiver.received == []
    assert list(WebhookDelivery.objects.values_list("attempts", flat=True)) == [1]
