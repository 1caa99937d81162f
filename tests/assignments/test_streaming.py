"""GET /sub/<client key>: the GrowthBook SDKs' streaming protocol (Server-Sent Events).

In-process tests read the stream through Django's test client; the end-to-end test runs the
web server as abacus runs it (gunicorn, 2 workers) and the official growthbook SDK in
streaming mode in another process, and flips a kill switch.
"""

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from assignments import streaming
from config import processes
from experiments.models import Environment
from flags.services import flag_create, flag_toggle
from tests.factories import running_experiment
from tests.fault.stack import base_env, free_port, wait_for, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(monkeypatch):
    """A fresh hub per test (a stopped one stays stopped); its watcher gone at the end, so no
    thread holds a database connection past the test."""
    fresh = streaming.Hub()
    monkeypatch.setattr(streaming, "hub", fresh)
    yield fresh
    fresh.stop()
    wait_for(lambda: not fresh.watching(), 5, "the stream watcher to stop")


@pytest.fixture
def kill_switch(project):
    """A boolean flag on in production (serving true) and in staging."""
    flag = flag_create(
        project=project, key="new-checkout", name="New checkout", default_variation="on"
    )
    for environment in Environment.objects.filter(
        project=project, key__in=["production", "staging"]
    ):
        flag_toggle(flag=flag, environment=environment, enabled=True)
    return flag


def production(project) -> Environment:
    return Environment.objects.get(project=project, production=True)


def events(chunks) -> list[tuple[str, object]]:
    """(type, data) of each event in SSE text; comments as ("comment", text)."""
    found = []
    for block in b"".join(chunks).decode().split("\n\n"):
        kind, data = None, None
        for line in block.splitlines():
            if line.startswith(":"):
                found.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                kind = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data = json.loads(line[len("data:") :])
        if kind:
            found.append((kind, data))
    return found


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
def test_stream_starts_with_the_payload_the_features_endpoint_serves(
    client, project, metrics, kill_switch, hub
):
    running_experiment(project)
    response = client.get(f"/sub/{project.client_key}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["Access-Control-Allow-Origin"] == "*"
    body = iter(response.streaming_content)
    [(kind, payload)] = events([next(body)])
    assert kind == "features"
    assert payload == client.get(f"/api/features/{project.client_key}").json()
    assert set(payload["features"]) == {"checkout-v2", "new-checkout"}
    assert hub.streams() == 1
    response.close()
    assert hub.streams() == 0
    wait_for(lambda: not hub.watching(), 5, "the watcher to stop with the last stream")


@pytestmark_db
def test_kill_switch_reaches_an_open_stream_within_a_second(client, project, kill_switch, hub):
    response = client.get(f"/sub/{project.client_key}")
    body = iter(response.streaming_content)
    [(_, first)] = events([next(body)])
    assert first["features"]["new-checkout"]["defaultValue"] is True
    started = time.monotonic()
    flag_toggle(flag=kill_switch, environment=production(project), enabled=False)
    [(kind, payload)] = events([next(body)])
    elapsed = time.monotonic() - started
    assert kind == "features"
    assert payload["features"]["new-checkout"]["defaultValue"] is False
    assert payload == client.get(f"/api/features/{project.client_key}").json()
    assert elapsed < 1.0
    response.close()


@pytestmark_db
def test_each_environment_streams_its_own_payload(client, project, kill_switch, hub, settings):
    """A staging stream serves staging's flags and follows staging's changes; production's
    features stay as they were."""
    settings.ABACUS_STREAM_HEARTBEAT_SECONDS = 0.6
    staging = Environment.objects.get(project=project, key="staging")
    prod_response = client.get(f"/sub/{project.client_key}")
    staging_response = client.get(f"/sub/{staging.client_key}")
    prod_body = iter(prod_response.streaming_content)
    staging_body = iter(staging_response.streaming_content)
    [(_, prod_first)] = events([next(prod_body)])
    [(_, staging_first)] = events([next(staging_body)])
    assert staging_first["features"]["new-checkout"]["defaultValue"] is True
    flag_toggle(flag=kill_switch, environment=staging, enabled=False)
    [(kind, staging_next)] = events([next(staging_body)])
    assert kind == "features"
    assert staging_next["features"]["new-checkout"]["defaultValue"] is False
    [(_, prod_next)] = events([next(prod_body)])  # a heartbeat, or the same features
    assert prod_next is None or prod_next["features"] == prod_first["features"]
    prod_response.close()
    staging_response.close()


@pytestmark_db
def test_heartbeats_and_the_stream_lifetime(client, project, kill_switch, hub, settings):
    settings.ABACUS_STREAM_HEARTBEAT_SECONDS = 0.05
    settings.ABACUS_STREAM_MAX_SECONDS = 0.5
    started = time.monotonic()
    response = client.get(f"/sub/{project.client_key}")
    found = events(list(response.streaming_content))  # ends by itself
    assert 0.4 <= time.monotonic() - started < 3
    assert found[0][0] == "features"
    assert found.count(("comment", "heartbeat")) >= 3
    assert hub.streams() == 0


@pytestmark_db
def test_streams_per_process_are_capped(client, project, kill_switch, hub, settings):
    settings.ABACUS_STREAMS_PER_PROCESS = 2
    url = f"/sub/{project.client_key}"
    first, second = client.get(url), client.get(url)
    bodies = [iter(first.streaming_content), iter(second.streaming_content)]
    for body in bodies:
        next(body)
    refused = client.get(url)
    assert refused.status_code == 503
    assert refused["Retry-After"] == "5"
    assert "retry later" in refused.json()["detail"]
    first.close()
    third = client.get(url)
    assert third.status_code == 200
    next(iter(third.streaming_content))
    second.close()
    third.close()
    assert hub.streams() == 0


@pytestmark_db
def test_stop_ends_streams_and_refuses_new_ones(client, project, kill_switch, hub):
    response = client.get(f"/sub/{project.client_key}")
    body = iter(response.streaming_content)
    next(body)
    streaming.stop()
    assert list(body) == []  # the stream ends at once
    assert client.get(f"/sub/{project.client_key}").status_code == 503


@pytest.mark.django_db
def test_unknown_client_key_and_other_methods(client, project):
    assert client.get("/sub/sdk-nope").status_code == 404
    assert client.post(f"/sub/{project.client_key}").status_code == 405


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_sdk_in_streaming_mode_sees_the_kill_switch_within_a_second(project, kill_switch):
    """gunicorn as abacus runs it (2 workers) and the official growthbook SDK with
    streaming=True in another process (bench/sdk_client.py): the flag served true, turned off
    through the service, is false in the SDK within 1 s, and back on again."""
    port = free_port()
    var = Path(tempfile.mkdtemp(prefix="abacus-stream-"))
    log = var / "web.log"
    web = subprocess.Popen(
        processes.web(bind=f"127.0.0.1:{port}", workers=2, access_log=False),
        cwd=ROOT,
        env=base_env(var),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    sdk = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, log)
        sdk = SdkProcess(base, project.client_key, "new-checkout")
        assert sdk.next_value()[1] is True  # loaded from /api/features/<client key>
        environment = production(project)
        # Unmeasured: the SDK opens its stream in the background; seeing a change proves it.
        flag_toggle(flag=kill_switch, environment=environment, enabled=False)
        assert sdk.next_value(timeout=15)[1] is False
        for enabled in (True, False, True):
            time.sleep(0.3)
            started = time.monotonic()
            flag_toggle(flag=kill_switch, environment=environment, enabled=enabled)
            at, value = sdk.next_value()
            assert value is enabled
            assert at - started < 1.0, f"{at - started:.2f} s"
        r = requests.get(f"{base}/sub/{project.client_key}", stream=True, timeout=5)
        assert r.headers["Content-Type"] == "text/event-stream"
        assert next(r.iter_lines()).startswith(b"retry:")
        r.close()
    finally:
        if sdk is not None:
            sdk.stop()
        web.terminate()
        web.wait(timeout=30)
    # The web server stops at once although streams were open (the gunicorn hooks end them).


class SdkProcess:
    """bench/sdk_client.py: the growthbook SDK in streaming mode, reporting a flag's value."""

    def __init__(self, base: str, client_key: str, feature: str) -> None:
        args = [sys.executable, "-m", "bench.sdk_client", "--api-host", base]
        args += ["--client-key", client_key, "--feature", feature]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.values: queue.Queue[tuple[float, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, at, value = line.split(" ", 2)
            if kind == "value":
                self.values.put((float(at), json.loads(value)))

    def next_value(self, timeout: float = 10) -> tuple[float, object]:
        """The next (monotonic time, value) the SDK reports."""
        try:
            return self.values.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the SDK reported no new value within {timeout} s") from None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
