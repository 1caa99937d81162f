"""docs/examples/blue_green_router.py, run as a process against a live server and two dummy
upstreams: blue until a blue-green release switches the flag, green during it, blue again after
the rollback; its tracked exposures and reported request events reach abacus."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from assignments.models import FlagExposure, MetricEvent
from experiments.services import api_key_create, user_token_create
from flags.services import flag_create, flag_environment_update

ROOT = Path(__file__).resolve().parents[2]
ROUTER = ROOT / "docs" / "examples" / "blue_green_router.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def upstream(colour: str) -> Iterator[str]:
    """A server answering its colour (and the path it was asked) to every GET."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = f"{colour} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def eventually(read, expected: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = read()
        except requests.RequestException as exc:
            seen = repr(exc)
        if seen == expected:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"expected {expected!r}, last saw {seen!r}")


def test_the_router_switches_with_the_release_and_back_on_rollback(
    live_server, project, admin_user
):
    flag = flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
    production = project.environments.get(key="production")
    flag_environment_update(
        flag=flag, environment=production, actor=admin_user, enabled=True, default_variation="off"
    )
    key = api_key_create(project=project, name="router", scopes=["evaluate", "ingest"]).secret
    token = user_token_create(user=admin_user).token
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"
    releases = f"{live_server.url}/api/v1/projects/shop/releases/"
    port = free_port()
    with upstream("blue") as blue, upstream("green") as green:
        router = subprocess.Popen(
            [sys.executable, str(ROUTER), "--abacus", live_server.url, "--flag", "new-checkout",
             "--route", f"off={blue}", "--route", f"on={green}", "--listen", f"127.0.0.1:{port}",
             "--cache-seconds", "0.2", "--track", "--report"],
            cwd=ROOT, env={**os.environ, "ABACUS_KEY": key},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/checkout?x=1"

            def colour() -> str:
                r = requests.get(url, headers={"X-Unit-Id": "u1"}, timeout=5)
                assert r.headers["X-Abacus-Variation"] in ("on", "off")
                return r.text

            assert eventually(colour, "blue /checkout?x=1")
            r = api.post(
                releases,
                json={"flag": "new-checkout", "environment": "production", "variation": "on",
                      "kind": "blue_green"},
                timeout=10,
            )  # fmt: skip
            assert r.status_code == 201, r.text
            release_id = r.json()["id"]
            eventually(colour, "green /checkout?x=1")
            r = api.post(f"{releases}{release_id}/rollback", json={"reason": "5xx"}, timeout=10)
            assert r.status_code == 200, r.text
            eventually(colour, "blue /checkout?x=1")
            # The router told abacus who saw what, and how each request went.
            variations = set(
                FlagExposure.objects.filter(flag=flag, unit_id="u1").values_list(
                    "variation", flat=True
                )
            )
            assert variations == {"off", "on"}
            deadline = time.monotonic() + 10
            while (
                time.monotonic() < deadline
                and not MetricEvent.objects.filter(name="latency_ms", unit_id="u1").exists()
            ):
                time.sleep(0.2)
            assert MetricEvent.objects.filter(name="requests", unit_id="u1").exists()
            assert MetricEvent.objects.filter(name="latency_ms", unit_id="u1").exists()
        finally:
            router.terminate()
            try:
                _, err = router.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                router.kill()
                _, err = router.communicate()
        assert "Traceback" not in err, err


@pytest.mark.parametrize(
    "args",
    [
        ["--flag", "f", "--route", "off=ftp://x"],
        ["--flag", "f", "--route", "off=http://x", "--fallback", "on"],
        ["--flag", "f"],
    ],
)
def test_the_router_refuses_bad_arguments(args):
    env = {**os.environ, "ABACUS_URL": "http://127.0.0.1:1", "ABACUS_KEY": "abk_x_y"}
    done = subprocess.run(
        [sys.executable, str(ROUTER), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "error" in done.stderr
