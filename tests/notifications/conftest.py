"""Fixtures of the notification tests: a local Slack-compatible receiver, eager tasks."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest


@pytest.fixture
def allow_local(settings):
    """The local receiver is a deliberate internal receiver: allow-listed, as an operator would
    (ABACUS_WEBHOOK_ALLOWED_HOSTS)."""
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def slack(allow_local):
    """A local HTTP server standing in for a Slack incoming webhook: records each POST (headers
    and parsed JSON) and answers the queued status codes (then 200 "ok", as Slack does)."""
    received: list[tuple[dict, dict]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), json.loads(body)))
            code = statuses.pop(0) if statuses else 200
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"ok" if code == 200 else b"invalid_payload")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    yield SimpleNamespace(url=url, received=received, statuses=statuses)
    server.shutdown()
    server.server_close()


@pytest.fixture
def eager(settings):
    """Tasks run in the caller's process when enqueued (Celery's eager mode), with no waiting
    between retries. Tests still run the on-commit callbacks themselves
    (``django_capture_on_commit_callbacks(execute=True)``): their transaction never commits."""
    from config.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    settings.ABACUS_WEBHOOK_RETRY_SECONDS = 0
    yield
    app.conf.task_always_eager = before
