"""SIGKILL the web server in the middle of a stream of event batches sent with retries.

A client sends numbered batches and retries each one (same event ids) until it gets a 2xx,
while the test kills gunicorn (master and workers) three times mid-request and restarts it.
Afterwards every batch is in the database exactly once, and the retries added no duplicates:
a retried batch whose first attempt was committed before the crash answers "duplicates".
"""

import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from assignments.models import Exposure, MetricEvent
from experiments.services import api_key_create
from tests.factories import running_experiment
from tests.fault.stack import base_env, free_port, gunicorn, wait_for, wait_healthy

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

BATCHES = 60
BATCH_SIZE = 500
KILLS = 3


def _batch(number: int, started: datetime) -> list[dict]:
    events = []
    for i in range(BATCH_SIZE):
        unit = f"u{number}-{i}"
        ts = (started + timedelta(seconds=1, milliseconds=i)).isoformat()
        if i % 2 == 0:
            events.append(
                {
                    "event_id": f"b{number}-{i}",
                    "type": "exposure",
                    "experiment": "checkout-v2",
                    "variant": "control" if i % 4 == 0 else "treatment",
                    "unit_id": unit,
                    "timestamp": ts,
                }
            )
        else:
            events.append(
                {
                    "event_id": f"b{number}-{i}",
                    "type": "metric",
                    "name": "purchase",
                    "unit_id": unit,
                    "value": 1.5,
                    "timestamp": ts,
                }
            )
    return events


class Sender(threading.Thread):
    """Sends every batch until it gets a 2xx, retrying with the same events on any failure."""

    def __init__(self, url: str, secret: str, started: datetime) -> None:
        super().__init__(daemon=True)
        self.url, self.started = url, started
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {secret}"
        self.answers: dict[int, dict] = {}
        self.attempts: dict[int, int] = {}
        self.failures = 0
        self.cut = 0
        self.in_flight_since: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 150
        for number in range(BATCHES):
            body = {"events": _batch(number, self.started)}
            while True:
                if time.monotonic() > deadline:
                    self.error = f"gave up on batch {number}"
                    return
                self.attempts[number] = self.attempts.get(number, 0) + 1
                try:
                    self.in_flight_since = time.monotonic()
                    response = self.session.post(self.url, json=body, timeout=30)
                except requests.RequestException as exc:
                    response = None
                    if "refused" not in str(exc).lower():
                        self.cut += 1  # sent, then the server died under it
                finally:
                    self.in_flight_since = None
                if response is not None and response.ok:
                    self.answers[number] = response.json()
                    break
                if response is not None and response.status_code < 500:
                    self.error = f"batch {number}: {response.status_code} {response.text[:300]}"
                    return
                self.failures += 1
                time.sleep(0.1)


def test_every_acknowledged_batch_is_stored_exactly_once_across_web_crashes(project, metrics):
    """Kill -9 the web server mid-batch three times; nothing acknowledged is lost or doubled."""
    experiment = running_experiment(project)
    secret = api_key_create(project=project, name="svc", scopes=["ingest"]).secret
    var = Path(tempfile.mkdtemp(prefix="abacus-fault-"))
    port = free_port()
    log = var / "web.log"
    web = gunicorn(base_env(var), port, log, workers=2).start()
    base = f"http://127.0.0.1:{port}"
    sender = None
    try:
        wait_healthy(base, log)
        sender = Sender(f"{base}/api/v1/events", secret, experiment.started_at)
        sender.start()
        kills = 0
        while kills < KILLS and sender.is_alive():
            # Wait for a few acknowledged batches, then for a request to be mid-flight.
            target = len(sender.answers) + 4
            wait_for(lambda t=target: len(sender.answers) >= t or not sender.is_alive(), 60, "acks")
            wait_for(
                lambda: (
                    not sender.is_alive()
                    or (
                        sender.in_flight_since is not None
                        and time.monotonic() - sender.in_flight_since > 0.005
                    )
                ),
                30,
                "a batch in flight",
                interval=0.002,
            )
            if not sender.is_alive():
                break
            web.kill()
            kills += 1
            time.sleep(0.5)
            web.start()
            wait_healthy(base, log)
        sender.join(timeout=150)
    finally:
        web.stop()
    assert sender.error is None, sender.error
    assert kills == KILLS and sender.cut >= 1, "the kills should have cut requests mid-flight"
    assert sorted(sender.answers) == list(range(BATCHES))

    stored = Exposure.objects.filter(project=project).count()
    stored += MetricEvent.objects.filter(project=project).count()
    assert stored == BATCHES * BATCH_SIZE
    for number in (0, BATCHES // 2, BATCHES - 1):
        prefix = f"b{number}-"
        rows = Exposure.objects.filter(project=project, event_id__startswith=prefix).count()
        rows += MetricEvent.objects.filter(project=project, event_id__startswith=prefix).count()
        assert rows == BATCH_SIZE
    # A batch committed just before a crash, whose answer was lost, comes back as duplicates
    # when retried: every event of every batch is either accepted once or a duplicate.
    for number, answer in sender.answers.items():
        assert answer["accepted"] + answer["duplicates"] == BATCH_SIZE and not answer["rejected"]
        if answer["duplicates"]:
            assert sender.attempts[number] > 1, f"batch {number}: duplicates on a first try"
    assert secret not in log.read_text(), "an API key reached the web server's log"
