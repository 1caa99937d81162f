"""The Python client library (clients/python, import name ``abacus_client``) against a live
server: local evaluation equals POST /api/v1/evaluate, exposures are de-duplicated, the queue
never blocks when the server is down, and a server stopped and restarted in the middle of the
traffic loses nothing and doubles nothing (counted by event ids in the database)."""

import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from abacus_client import AbacusClient, EventBatcher
from django.core.wsgi import get_wsgi_application
from django.db import connections

from assignments.models import Exposure, FlagExposure, MetricEvent
from tests.clients.world import FAST, World, attributes, server_evaluate


@pytest.fixture
def world(live_server, project, admin_user, metrics):
    """Flags of each kind in production (rules, rollouts, a segment of attributes, off, no
    rules, an experiment rule), a running experiment, and an ingest + evaluate key."""
    return World(live_server, project, admin_user).common().serve()


@pytest.fixture
def client(world):
    made = AbacusClient(world["url"], world["client_key"], world["key"], **FAST)
    yield made
    made.close(timeout=5)


FLAGS = ["new-checkout", "banner", "dark", "plain", "exp-flag"]


def test_local_evaluation_equals_the_server(world, request):
    # No polling here: the only requests are this loop's, one at a time (SQLite's shared
    # in-memory test database answers concurrent requests with a 503 now and then).
    client = AbacusClient(world["url"], world["client_key"], world["key"], refresh_interval=3600)
    request.addfinalizer(lambda: client.close(timeout=5))
    # Closed at the end: a kept-alive connection holds a live-server thread and its database
    # connection past the test.
    server = requests.Session()
    server.headers["Authorization"] = f"Bearer {world['key']}"
    request.addfinalizer(server.close)
    for i in range(200):
        unit, attrs = f"u{i}", attributes(i)
        answer = server_evaluate(server, world["url"], unit, attrs)
        for key in FLAGS:
            local = client.evaluate(key, unit, attrs, track=False)
            expected = answer[key]
            assert (local.value, local.variation, local.reason) == (
                expected["value"], expected["variation"], expected["reason"]
            ), (key, unit, attrs)  # fmt: skip
            if expected["reason"] in ("rule", "rollout"):
                assert local.rule_id == expected["rule_id"]
    # The experiment outside any flag: evaluated by the SDK, the variant named by its meta.
    seen = {client.evaluate("checkout-v2", f"u{i}", track=False).variation for i in range(50)}
    assert seen == {"control", "treatment"}
    unknown = client.evaluate("nope", "u1")
    assert unknown.reason == "unknown" and client.get_feature_value("nope", 7, "u1") == 7
    assert client.is_on("plain", "u1") and not client.is_on("dark", "u1")


def test_exposures_are_deduplicated_and_events_tracked(world, client, project):
    for _ in range(3):
        for i in range(40):
            client.evaluate("new-checkout", f"u{i}", attributes(i))
            client.evaluate("exp-flag", f"u{i}")
            client.evaluate("checkout-v2", f"u{i}")
    ids = [client.track(f"u{i}", "purchase", 9.5) for i in range(40)]
    assert client.flush(timeout=10)
    flag_rows = FlagExposure.objects.filter(project=project)
    assert flag_rows.filter(flag__key="new-checkout").count() == 40
    assert flag_rows.filter(flag__key="exp-flag").count() == 40
    # One experiment exposure per unit of each experiment (the flag's experiment included).
    exposures = Exposure.objects.filter(project=project)
    assert exposures.filter(experiment__key="checkout-v2").count() == 40
    assert exposures.filter(experiment__key="flag-exp").count() == 40
    for row in exposures.filter(experiment__key="flag-exp").select_related("variant")[:10]:
        local = client.evaluate("exp-flag", row.unit_id, track=False)
        assert row.variant.key == local.variation
    assert set(MetricEvent.objects.filter(project=project).values_list("event_id", flat=True)) == (
        set(ids)
    )
    stats = client.stats()
    assert stats["accepted"] == 40 * 4 + 40 and stats["duplicates"] == 0 and not stats["rejected"]


def test_an_untracked_evaluation_does_not_hide_the_later_exposure(world, client, project):
    """evaluate(track=False) must not mark the unit as seen in the SDK: the first tracked
    evaluation afterwards still records the experiment exposure."""
    client.evaluate("checkout-v2", "quiet-unit", track=False)
    client.evaluate("checkout-v2", "quiet-unit")
    assert client.flush(timeout=10)
    exposures = Exposure.objects.filter(project=project, unit_id="quiet-unit")
    assert exposures.filter(experiment__key="checkout-v2").count() == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_queue_never_blocks_when_the_server_is_down():
    port = _free_port()  # nothing listens there
    client = AbacusClient(f"http://127.0.0.1:{port}", "ck", "key", max_queue=1000, **FAST)
    assert client.evaluate("anything", "u1").reason == "unknown"
    started = time.monotonic()
    for i in range(20_000):
        client.track(f"u{i}", "purchase")
    assert time.monotonic() - started < 2.0
    stats = client.stats()
    assert stats["dropped_overflow"] >= 20_000 - 1000 - client.batcher.batch_size
    started = time.monotonic()
    assert client.close(timeout=0.5) is False  # nothing could be sent
    assert time.monotonic() - started < 3.0
    assert client.stats()["dropped_shutdown"] > 0


def test_drop_newest_keeps_the_first_events():
    batcher = EventBatcher(f"http://127.0.0.1:{_free_port()}", "k", max_queue=3,
                           overflow="drop_newest", flush_interval=60)  # fmt: skip
    assert [batcher.put({"n": i}) for i in range(5)] == [True, True, True, False, False]
    assert batcher.stats["dropped_overflow"] == 2
    batcher.close(timeout=0.1)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # noqa: ANN002
        pass


class _ThreadingServer(WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def process_request(self, request, client_address):  # noqa: ANN001
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

    def _handle(self, request, client_address):  # noqa: ANN001
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            connections.close_all()  # this thread's database connections end with it


class RestartableServer:
    """Django's WSGI app in a thread on a fixed port: stop it and start it again."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, _ThreadingServer, _Quiet)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_server_stopped_and_restarted_in_the_middle(world, project):
    """N events across an outage: every one stored, none twice. The first answer after the
    restart is lost on purpose (the server stores the batch, the client sees a 503 and sends
    it again): the retry is counted as duplicates, not stored twice."""
    django_app = get_wsgi_application()
    lose_next = threading.Event()

    def app(environ, start_response):  # noqa: ANN001
        if environ["PATH_INFO"] == "/api/v1/events" and lose_next.is_set():
            lose_next.clear()
            for _chunk in django_app(environ, lambda *a, **k: None):
                pass  # stored; the answer never reaches the client
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"lost"]
        return django_app(environ, start_response)

    server = RestartableServer(app)
    server.start()
    client = AbacusClient(server.url, world["client_key"], world["key"], batch_size=50, **FAST)
    ids = []
    for i in range(300):
        ids.append(client.track(f"u{i}", "purchase", float(i)))
        if i == 100:
            assert client.flush(timeout=10)
            server.stop()
        if i == 200:
            time.sleep(0.5)  # the client retries against a closed port meanwhile
            lose_next.set()
            server.start()
        time.sleep(0.001)
    assert client.close(timeout=15)
    server.stop()
    stored = list(MetricEvent.objects.filter(project=project).values_list("event_id", flat=True))
    assert len(stored) == len(set(stored)) == 300
    assert set(stored) == set(ids)
    stats = client.stats()
    assert stats["retries"] > 0 and stats["duplicates"] > 0
    # The lost batch was stored the first time: its retry is all duplicates.
    assert stats["accepted"] + stats["duplicates"] == stats["sent"] == 300
    assert not stats["rejected"] and not stats["dropped_shutdown"]


class _FakeResponse:
    def __init__(self, status: int, headers: dict | None = None, body: dict | None = None):
        self.status_code, self.headers, self._body, self.text = status, headers or {}, body, ""

    def json(self):  # noqa: ANN201
        return self._body or {}


class _FakeSession:
    """Answers 429 (Retry-After: 0.3), then 503, then 202; records when and what was sent."""

    def __init__(self) -> None:
        self.answers = [
            _FakeResponse(429, {"Retry-After": "0.3"}),
            _FakeResponse(503),
            _FakeResponse(202, body={"accepted": 2, "duplicates": 0, "rejected": []}),
        ]
        self.calls: list[tuple[float, list]] = []

    def post(self, url, json, headers, timeout):  # noqa: ANN001, ANN201, A002
        self.calls.append((time.monotonic(), [e["event_id"] for e in json["events"]]))
        return self.answers.pop(0)


def test_retries_respect_retry_after_and_keep_the_event_ids():
    session = _FakeSession()
    batcher = EventBatcher("http://abacus.invalid", "k", session=session, flush_interval=0.01,
                           backoff_base=0.01, backoff_max=5)  # fmt: skip
    batcher.put({"event_id": "e1"})
    batcher.put({"event_id": "e2"})
    assert batcher.flush(timeout=5)
    batcher.close(timeout=1)
    (t0, first), (t1, second), (t2, third) = session.calls
    assert first == second == third == ["e1", "e2"]
    assert t1 - t0 >= 0.3  # Retry-After
    assert batcher.stats["retries"] == 2 and batcher.stats["accepted"] == 2
