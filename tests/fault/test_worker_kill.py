"""SIGKILL a Celery worker in the middle of an analysis: the task comes back, once.

Tasks are acknowledged late and rejected when their worker dies (config/settings.py), so:
- on Redis, killing the whole worker leaves the message unacknowledged; after the visibility
  timeout (set to 2 s here) the next worker to start delivers it again;
- on the embedded filesystem broker, killing the pool process that runs the task makes the
  worker's main process put the message back (a whole-worker crash there loses the delivery:
  the scheduled analysis catches up at the next interval; docs/operations.md says so).
Meanwhile the results API keeps serving the previous snapshot, and in the end the run has
produced exactly one new snapshot.
"""

import os
import signal
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from analysis.models import AnalysisRun, ResultSnapshot
from analysis.services import analysis_run
from assignments.services import events_ingest
from experiments.services import user_token_create
from tests.factories import running_experiment
from tests.fault.stack import (
    RedisServer,
    base_env,
    celery_worker,
    free_port,
    gunicorn,
    wait_for,
    wait_healthy,
    wait_log,
)

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]


def _events(experiment) -> list[dict]:
    events = []
    for i in range(200):
        ts = experiment.started_at + timedelta(milliseconds=10 + i)
        variant = "control" if i % 2 else "treatment"
        events.append(
            {
                "event_id": f"x{i}",
                "type": "exposure",
                "experiment": experiment.key,
                "variant": variant,
                "unit_id": f"u{i}",
                "timestamp": ts.isoformat(),
            }
        )
        if i % 3 == 0:
            events.append(
                {
                    "event_id": f"p{i}",
                    "type": "metric",
                    "name": "purchase",
                    "unit_id": f"u{i}",
                    "timestamp": (ts + timedelta(milliseconds=5)).isoformat(),
                }
            )
    return events


def _served_at(people: requests.Session, url: str) -> datetime:
    return datetime.fromisoformat(people.get(url).json()["computed_at"])


@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_killed_analysis_is_redelivered_and_snapshots_once(broker, admin_user, project, metrics):
    """Kill -9 mid-analysis; the previous snapshot stays served; one new snapshot follows."""
    if broker == "redis" and not RedisServer.available():
        pytest.skip("redis-server not installed")
    experiment = running_experiment(project)
    events_ingest(project=project, events=_events(experiment))
    time.sleep(0.05)
    previous = analysis_run(experiment_id=experiment.pk)

    var = Path(tempfile.mkdtemp(prefix="abacus-fault-"))
    redis = RedisServer(var / "redis.log").start() if broker == "redis" else None
    pause = var / "pause"
    pause.touch()
    env = base_env(
        var,
        broker=redis.url if redis else "filesystem://",
        ABACUS_BROKER_VISIBILITY_TIMEOUT="2",
        ABACUS_TEST_PAUSE_FILE=str(pause),
        ABACUS_TEST_PAUSE_SECONDS="120",
    )
    port = free_port()
    web = gunicorn(env, port, var / "web.log").start()
    pool = "solo" if broker == "redis" else "prefork"
    log = var / "worker.log"
    first = celery_worker(env, log, "first", pool=pool, module="tests.fault.paused_worker")
    procs = [web, first.start()]
    base = f"http://127.0.0.1:{port}"
    people = requests.Session()
    people.headers["Authorization"] = f"Token {user_token_create(user=admin_user).token}"
    results_url = f"{base}/api/v1/projects/shop/experiments/checkout-v2/results"
    try:
        wait_healthy(base, var / "web.log")
        queued = people.post(f"{base}/api/v1/projects/shop/experiments/checkout-v2/analyze")
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        wait_log(log, "test pause: analysis holding", 60)

        assert _served_at(people, results_url) == previous.computed_at
        assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1

        if broker == "redis":
            first.kill()  # the worker and everything it holds, unacknowledged
            time.sleep(3)  # past the visibility timeout
            second = celery_worker(env, log, "second", pool="solo").start()
            procs.append(second)
        else:
            [child] = wait_for(first.children, 10, "the pool process")
            os.kill(child, signal.SIGKILL)  # the process running the task

        # Still the previous snapshot while the run is redone.
        assert _served_at(people, results_url) == previous.computed_at

        def finished():
            run = AnalysisRun.objects.get(pk=run_id)
            return run.status == "succeeded" and run

        wait_for(finished, 90, f"run {run_id} to finish after the kill\n{log}")
        time.sleep(2)  # room for a duplicate delivery to show up, if there were one
        snapshots = ResultSnapshot.objects.filter(experiment=experiment).order_by("pk")
        assert snapshots.count() == 2, [s.pk for s in snapshots]
        new = snapshots.last()
        assert new.computed_at > previous.computed_at
        assert _served_at(people, results_url) == new.computed_at
    finally:
        for proc in procs:
            proc.stop()
        if redis:
            redis.kill()
    worker_log = log.read_text()
    if broker == "filesystem":
        assert "WorkerLostError" in worker_log or "exited with 'signal 9" in worker_log
