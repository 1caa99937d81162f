"""End to end: a guardrail regression posted through the API rolls the experiment back on its own.

Real gunicorn, Celery worker and beat (analysing every 2 seconds) as subprocesses. Nobody asks
for an analysis: beat fans out the run, the worker sees the guardrail harm, rolls the experiment
back (assignment answers control from then on), writes the audit log and POSTs a signed webhook
to a local HTTP server in this test process.
"""

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests

from experiments.models import AuditLog, Project
from experiments.services import (
    api_key_create,
    metric_create,
    project_create,
    user_token_create,
)
from tests.e2e.test_flow import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def webhook_receiver():
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/abacus-hook", received
    server.shutdown()
    server.server_close()


def rollback_messages(received):
    return [(h, b) for h, b in received if h.get("X-Abacus-Event") == "experiment.rolled_back"]


def test_guardrail_regression_rolls_back_on_its_own(django_user_model, webhook_receiver):
    hook_url, received = webhook_receiver
    user = django_user_model.objects.create_user("pm", "pm@example.com", "pw-pm-12345")
    project = project_create(slug="e2e", name="E2E", owner=user)
    Project.objects.filter(pk=project.pk).update(webhook_url=hook_url)
    secret = project.webhook_secret
    token = user_token_create(user=user).token
    service_key = api_key_create(project=project, name="svc", scopes=["assign", "ingest"]).secret
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    metric_create(
        project=project,
        key="errors",
        name="Checkout errors",
        kind="count",
        event_name="checkout_error",
        direction="decrease",
    )
    people = requests.Session()
    people.headers["Authorization"] = f"Token {token}"
    services = requests.Session()
    services.headers["Authorization"] = f"Bearer {service_key}"

    # The receiver runs on this machine: a deliberate internal receiver, allow-listed.
    stack_env = {"ABACUS_ANALYSIS_INTERVAL": "2", "ABACUS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    with running_stack(beat=True, env=stack_env) as (base, logs):
        api = f"{base}/api/v1/projects/e2e/experiments"
        r = people.post(
            f"{api}/",
            json={
                "key": "one-page-checkout",
                "name": "One-page checkout",
                "variants": [
                    {"key": "control", "weight": 0.5, "is_control": True},
                    {"key": "treatment", "weight": 0.5},
                ],
                "metrics": [
                    {"metric": "purchase", "role": "primary"},
                    {"metric": "errors", "role": "guardrail", "non_inferiority_margin": 0.05},
                ],
                "auto_rollback": True,
            },
        )
        assert r.status_code == 201, r.text
        r = people.post(f"{api}/one-page-checkout/start")
        assert r.status_code == 200, r.text
        started = datetime.fromisoformat(r.json()["started_at"].replace("Z", "+00:00"))

        units = [f"user-{i}" for i in range(800)]
        r = services.post(
            f"{base}/api/v1/assign/bulk", json={"units": [{"unit_id": u} for u in units]}
        )
        assert r.status_code == 200, r.text
        variant_of = {
            row["unit_id"]: row["assignments"]["one-page-checkout"]["variant"]
            for row in r.json()["results"]
        }
        # The regression: the treatment throws three times as many checkout errors.
        rng = np.random.default_rng(11)
        events = []
        for i, u in enumerate(units):
            seen = started + timedelta(milliseconds=1 + i)
            events.append(
                {
                    "event_id": f"x-{u}",
                    "type": "exposure",
                    "experiment": "one-page-checkout",
                    "variant": variant_of[u],
                    "unit_id": u,
                    "timestamp": seen.isoformat(),
                }
            )
            errors = rng.poisson(1.5 if variant_of[u] == "treatment" else 0.5)
            for j in range(errors):
                events.append(
                    {
                        "event_id": f"err-{u}-{j}",
                        "type": "metric",
                        "name": "checkout_error",
                        "unit_id": u,
                        "timestamp": (seen + timedelta(milliseconds=100)).isoformat(),
                    }
                )
        r = services.post(f"{base}/api/v1/events", json={"events": events})
        assert r.status_code == 202 and not r.json()["rejected"], r.text

        for _ in range(240):
            experiment = people.get(f"{api}/one-page-checkout").json()
            if experiment["status"] == "rolled_back" and rollback_messages(received):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"no rollback (status {experiment['status']}, {len(received)} webhooks):\n"
                + (logs / "worker.log").read_text()[-5000:]
            )

        # Assignment answers control for everyone from now on, treatment units included.
        treated = next(u for u in units if variant_of[u] == "treatment")
        answer = services.post(f"{base}/api/v1/assign", json={"unit_id": treated}).json()
        assert answer["assignments"]["one-page-checkout"]["variant"] == "control"

        results = people.get(f"{api}/one-page-checkout/results").json()
        assert results["recommendation"]["action"] == "rollback"
        guardrail = next(m for m in results["metrics"] if m["metric"] == "errors")
        assert guardrail["status"] == "harmed" and guardrail["ci_low"] > 0

    # The webhook: signed with the project's secret, naming the experiment and why (the
    # recommendation change is announced in its own message).
    headers, body = rollback_messages(received)[0]
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Abacus-Signature"], signature)
    message = json.loads(body)
    assert message["event"] == "experiment.rolled_back"
    assert message["experiment"] == "one-page-checkout" and message["status"] == "rolled_back"
    assert "Checkout errors (guardrail) rose in 'treatment'" in message["reason"]
    # The audit log says who (the automation) and why.
    log = AuditLog.objects.get(experiment__key="one-page-checkout", action="experiment.rollback")
    assert log.actor_label == "system" and log.after["reason"] == message["reason"]
