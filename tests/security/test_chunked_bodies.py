"""Request bodies sent with `Transfer-Encoding: chunked` are read, not taken as empty.

Through the WSGI application gunicorn serves (config.wsgi.application), and through a real
gunicorn (e2e).
"""

import io
import json
import socket
import uuid

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory

from config.wsgi import application
from tests.fault import stack

pytestmark = [pytest.mark.security]

BATCH = {
    "events": [
        {
            "event_id": "e1",
            "type": "exposure",
            "experiment": "checkout-v2",
            "variant": "control",
            "unit_id": "u1",
            "timestamp": "2026-11-29T10:00:00Z",
        }
    ]
}


def _call(environ: dict) -> tuple[str, dict]:
    answer = {}

    def start_response(status: str, headers: list) -> None:
        answer["status"] = status

    # As django.test.Client does: keep the test's database connection open.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        body = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], json.loads(body)


def _chunked_environ(secret: str, body: bytes, terminated: bool = True) -> dict:
    environ = (
        RequestFactory()
        .post(
            "/api/v1/assign",
            data=b"",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
            HTTP_TRANSFER_ENCODING="chunked",
        )
        .environ
    )
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(body)  # the server has decoded the chunks
    if terminated:
        environ["wsgi.input_terminated"] = True
    return environ


@pytest.mark.django_db
def test_a_chunked_body_is_read_by_the_wsgi_application(service_secret, project, metrics):
    from tests.factories import running_experiment

    running_experiment(project)
    body = json.dumps({"unit_id": "u1"}).encode()
    status, data = _call(_chunked_environ(service_secret, body))
    assert status.startswith("200"), data
    assert "checkout-v2" in data["assignments"]


@pytest.mark.django_db
def test_a_chunked_body_over_the_limit_is_a_413(service_secret, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    status, data = _call(_chunked_environ(service_secret, b"x" * 500))
    assert status.startswith("413") and data["field"] == "body"


def test_a_server_that_cannot_end_a_chunked_body_gets_411():
    status, data = _call(_chunked_environ("abk_x_y", b"{}", terminated=False))
    assert status.startswith("411") and "Content-Length" in data["detail"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_gunicorn_reads_a_chunked_batch_of_events(tmp_path, service_secret, project, metrics):
    from tests.factories import running_experiment

    running_experiment(project)
    port = stack.free_port()
    log = tmp_path / "web.log"
    web = stack.gunicorn(stack.base_env(tmp_path), port, log, workers=1).start()
    try:
        stack.wait_healthy(f"http://127.0.0.1:{port}", log)
        body = json.dumps(BATCH).encode()
        chunks = (
            b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:50], body[50:])
            )
            + b"0\r\n\r\n"
        )
        request = (
            f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {service_secret}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\nX-Id: {uuid.uuid4()}\r\n\r\n"
        ).encode() + chunks
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            response = b""
            while data := sock.recv(65536):
                response += data
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202"), response[:500]
        if b"chunked" in head.lower():
            payload = payload.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
        assert json.loads(payload)["accepted"] == 1
    finally:
        web.stop()
