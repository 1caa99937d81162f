"""Dependencies go away: the broker (Redis) and the database.

- Broker down: assignment and ingestion keep answering (they never touch the broker, and the
  rate limiter, whose cache is the same Redis, fails open); queueing an analysis answers 503
  with a message; /readyz stays 200 "degraded" naming the broker. When Redis is back, the
  scheduled analysis catches up and counts the events that arrived during the outage.
- Database down: every endpoint answers 503 with a clear message (JSON for the API, a page
  for people); /healthz stays 200 and /readyz answers 503 naming the database.
"""

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from analysis.models import AnalysisRun, ResultSnapshot
from experiments.services import api_key_create, user_token_create
from tests.factories import running_experiment
from tests.fault.stack import (
    RedisServer,
    base_env,
    celery_beat,
    celery_worker,
    free_port,
    gunicorn,
    wait_for,
    wait_healthy,
)

pytestmark = [pytest.mark.fault]


def _exposures(experiment, start: int, count: int) -> list[dict]:
    return [
        {
            "event_id": f"x{i}",
            "type": "exposure",
            "experiment": experiment.key,
            "variant": "control" if i % 2 else "treatment",
            "unit_id": f"u{i}",
            "timestamp": (experiment.started_at + timedelta(milliseconds=i + 1)).isoformat(),
        }
        for i in range(start, start + count)
    ]


@pytest.mark.django_db(transaction=True)
def test_broker_down_keeps_assignment_and_ingestion_up_and_analysis_catches_up(
    admin_user, project, metrics
):
    if not RedisServer.available():
        pytest.skip("redis-server not installed")
    experiment = running_experiment(project)
    secret = api_key_create(project=project, name="svc", scopes=["assign", "ingest"]).secret
    var = Path(tempfile.mkdtemp(prefix="abacus-fault-"))
    redis = RedisServer(var / "redis.log").start()
    env = base_env(var, broker=redis.url, ABACUS_ANALYSIS_INTERVAL="3")
    port = free_port()
    procs = [
        gunicorn(env, port, var / "web.log").start(),
        celery_worker(env, var / "worker.log", "worker").start(),
        celery_beat(env, var / "beat.log", var).start(),
    ]
    base = f"http://127.0.0.1:{port}"
    service = requests.Session()
    service.headers["Authorization"] = f"Bearer {secret}"
    people = requests.Session()
    people.headers["Authorization"] = f"Token {user_token_create(user=admin_user).token}"
    try:
        wait_healthy(base, var / "web.log")
        wait_for(
            lambda: requests.get(f"{base}/readyz", timeout=1).json()["status"] == "ok",
            10,
            "readyz ok",
        )
        posted = service.post(
            f"{base}/api/v1/events", json={"events": _exposures(experiment, 0, 50)}
        )
        assert posted.status_code == 202, posted.text

        redis.kill()
        down_at = datetime.now(UTC)
        for i in range(20):
            assigned = service.post(f"{base}/api/v1/assign", json={"unit_id": f"d{i}"}, timeout=10)
            assert assigned.status_code == 200, assigned.text
            assert assigned.json()["assignments"]["checkout-v2"]["variant"]
        posted = service.post(
            f"{base}/api/v1/events", json={"events": _exposures(experiment, 50, 150)}, timeout=10
        )
        assert posted.status_code == 202 and posted.json()["accepted"] == 150, posted.text
        # Each web process serves a broker result at most FRESH_SECONDS (1 s) old, and answers
        # within 200 ms: a second after the outage began, every answer says so, at once.
        time.sleep(max(0.0, 1.2 - (datetime.now(UTC) - down_at).total_seconds()))
        for _ in range(6):  # both web processes
            started = time.perf_counter()
            ready = requests.get(f"{base}/readyz", timeout=1)
            assert time.perf_counter() - started < 0.2
            assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
            assert "broker" in ready.json()["failed"] and ready.json()["database"] == "ok"
            assert requests.get(f"{base}/readyz?strict=1", timeout=1).status_code == 503
        queued = people.post(
            f"{base}/api/v1/projects/shop/experiments/checkout-v2/analyze", timeout=60
        )
        assert queued.status_code == 503, queued.text
        assert "broker is unavailable" in queued.json()["detail"]
        run = AnalysisRun.objects.filter(experiment=experiment).order_by("-id").first()
        assert run.status == "failed" and "broker is unavailable" in run.error, run.error

        time.sleep(1)
        redis.proc.start()  # the same port again
        wait_for(
            lambda: requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ok",
            30,
            "readyz ok after the broker returns",
        )

        def caught_up():
            snapshot = (
                ResultSnapshot.objects.filter(experiment=experiment, computed_at__gt=down_at)
                .order_by("-computed_at")
                .first()
            )
            return snapshot if snapshot and snapshot.total_units == 200 else None

        wait_for(caught_up, 90, "a scheduled snapshot counting the outage's events")
    finally:
        for proc in procs:
            proc.stop()
        redis.kill()


def test_database_down_answers_503_with_a_message_and_readyz_names_it(tmp_path):
    """A web server whose PostgreSQL does not answer: 503s that say so; /healthz still 200."""
    dead = free_port()
    env = base_env(tmp_path, broker="filesystem://")
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{dead}/abacus"
    port = free_port()
    web = gunicorn(env, port, tmp_path / "web.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, tmp_path / "web.log")
        ready = requests.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["failed"][0] == "database"
        assert ready.json()["database"].startswith("error: OperationalError")
        key = {"Authorization": "Bearer abk_0123456789ab_secretsecret"}
        token = {"Authorization": "Token 0123456789abcdef"}
        calls = [
            ("POST", "/api/v1/assign", key, {"unit_id": "u1"}),
            ("POST", "/api/v1/assign/bulk", key, {"units": [{"unit_id": "u1"}]}),
            ("POST", "/api/v1/events", key, {"events": []}),
            ("GET", "/api/v1/projects/", token, None),
            ("GET", "/api/v1/projects/shop/experiments/checkout-v2/results", token, None),
            ("GET", "/api/features/sdk-0123456789", {}, None),
        ]
        for method, path, headers, body in calls:
            response = requests.request(method, base + path, headers=headers, json=body, timeout=30)
            assert response.status_code == 503, f"{method} {path}: {response.text[:300]}"
            assert response.json()["detail"] == "The database is unavailable; try again shortly."
            assert response.headers["Retry-After"]
        page = requests.get(
            f"{base}/p/shop/", cookies={"sessionid": "x" * 32}, timeout=30, allow_redirects=False
        )
        assert page.status_code == 503 and "database is unavailable" in page.text
        assert "text/html" in page.headers["Content-Type"]
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        web.stop()
    assert "Traceback" not in (tmp_path / "web.log").read_text()
