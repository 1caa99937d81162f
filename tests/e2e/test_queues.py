"""End to end: a burst of analyses never delays a rollback (config/queues.py).

A private Redis and real Celery workers (config/processes.py) on the test database. The
analysis queue is flooded with the beat's scheduled analyses (``analysis.run`` without a run
id, priority 6), one worker working through them; then a harmful release's analysis is queued:

- a worker of the ``releases`` queue alone takes it at once and rolls the release back while
  hundreds of analyses still wait (the pool layout of docs/operations.md);
- a worker consuming both queues (the analysis worker, given the ``releases`` queue as well,
  as ``make run``'s one worker consumes all) takes a second release's analysis (priority 0)
  and then an analysis a person asked for (priority 3) before the scheduled analyses still
  queued: on Redis, lower numbers are popped first, across queues and within one.

Messages are sent by a Celery app of this process with the product's routing (queues.Router)
and the workers' private queue prefix.
"""

import socket
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from celery import Celery

from analysis.models import AnalysisRun, RunStatus
from assignments.services import events_ingest
from config import queues
from experiments.models import Environment
from experiments.services import metric_create
from flags.services import flag_create, flag_environment_update
from releases.models import Release, ReleaseStatus
from releases.services import release_create
from tests.factories import running_experiment
from tests.fault.stack import RedisServer, base_env, celery_worker, wait_for, wait_log
from tests.releases.conftest import simulate

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FLOOD = 300  # scheduled analyses queued before the release's analysis
PROMPT_SECONDS = 20.0  # from queueing the release's analysis to the rollback committed
STEPS = [
    {"percent": 20, "min_minutes": 0, "min_units": 200},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
]


def _sender(broker: str, prefix: str) -> Celery:
    """A producer with the product's routing and the workers' private queue names."""
    app = Celery(f"sender-{uuid.uuid4().hex[:6]}")
    # Celery prefers CELERY_BROKER_URL from the environment to broker_url: name both ways.
    app.conf.broker_read_url = app.conf.broker_write_url = broker
    app.conf.task_queues = queues.declared(prefix)
    app.conf.task_default_queue = queues.default_queue(prefix)
    app.conf.task_routes = (queues.Router(prefix),)
    return app


def _harmful_release(project, admin_user, production, key: str) -> Release:
    """A running release whose new variation errs on half the requests (5% on the baseline)."""
    flag = flag_create(project=project, key=key, name=key, actor=admin_user)
    flag_environment_update(
        flag=flag, environment=production, actor=admin_user, enabled=True, default_variation="off"
    )
    release = release_create(
        project=project, flag=flag, environment=production, variation="on", steps=STEPS,
        metrics=[{"metric": "error-rate"}], actor=admin_user,
    )  # fmt: skip
    simulate(project=project, environment=production, flag=flag,
             at=release.step_started_at + timedelta(milliseconds=100), units=1500,
             share_new=0.2, rng=np.random.default_rng(len(key)),
             error_rate={"on": 0.5, "off": 0.05}, prefix=f"{key}-")  # fmt: skip
    return release


def _rolled_back(release: Release) -> bool:
    return Release.objects.get(pk=release.pk).status == ReleaseStatus.ROLLED_BACK


def _exposures(experiment, count: int) -> list[dict]:
    start = experiment.started_at - timedelta(seconds=count)  # all before the analyses' cut-off
    return [
        {"event_id": f"x{i}", "type": "exposure", "experiment": experiment.key,
         "variant": "treatment" if i % 2 else "control", "unit_id": f"u{i}",
         "timestamp": (start + timedelta(seconds=i + 0.5 * count)).isoformat()}
        for i in range(count)
    ]  # fmt: skip


def test_a_rollback_runs_promptly_while_analyses_flood_their_queue(admin_user, project, metrics):
    """The release worker rolls the release back within PROMPT_SECONDS of its analysis being
    queued, with most of the flood still queued; then a worker of both queues rolls the next
    release back, then runs a requested analysis, before the scheduled analyses queued ahead of
    them (a few run first: those in hand as they were sent)."""
    if not RedisServer.available():
        pytest.skip("redis-server not installed: the priorities under test are Redis's")
    var = Path(tempfile.mkdtemp(prefix="abacus-queues-"))
    redis = RedisServer(var / "redis.log").start()
    env = base_env(var, broker=redis.url)
    prefix = env["ABACUS_TASK_QUEUE"]
    analysis_log, releases_log = var / "analysis-worker.log", var / "releases-worker.log"
    analysis_worker = celery_worker(env, analysis_log, "analysis", roles=(queues.ANALYSIS,))
    releases_worker = celery_worker(env, releases_log, "releases", roles=(queues.RELEASES,))
    procs = [analysis_worker.start(), releases_worker.start()]
    sender = _sender(redis.url, prefix)
    try:
        # The data, while the workers start.
        production = Environment.objects.get(project=project, key="production")
        metric_create(project=project, key="error-rate", name="Errors per request",
                      kind="ratio", event_name="error", denominator_event="request",
                      direction="decrease")  # fmt: skip
        experiment = running_experiment(project)
        events_ingest(project=project, events=_exposures(experiment, 400))
        first = _harmful_release(project, admin_user, production, "new-checkout")
        second = _harmful_release(project, admin_user, production, "new-search")
        scheduled = AnalysisRun.objects.filter(experiment=experiment, trigger="schedule")
        wait_log(analysis_log, " ready.", 120)
        wait_log(releases_log, " ready.", 120)

        # The flood, as the beat's fan-out sends it, and the analysis worker busy with it.
        with sender.producer_or_acquire() as producer:
            for _ in range(FLOOD):
                sender.send_task("analysis.run", args=[experiment.pk], producer=producer)
        wait_for(scheduled.exists, 60, "a scheduled analysis to start")

        queued_at = time.monotonic()
        sender.send_task("releases.analyze", args=[first.pk])
        wait_for(lambda: _rolled_back(first), 60, f"release {first.pk} rolled back")
        took = time.monotonic() - queued_at
        still_queued = FLOOD - scheduled.count()
        print(f"rollback {took:.2f} s after its analysis was queued; {still_queued} of {FLOOD} "
              "analyses still queued")  # fmt: skip
        assert took < PROMPT_SECONDS
        assert still_queued > FLOOD // 2
        log = releases_log.read_text()
        assert "Task releases.analyze[" in log and "Task analysis.run[" not in log

        # One worker, both queues.
        releases_worker.stop()
        name = analysis_worker.args[analysis_worker.args.index("-n") + 1]
        reply = sender.control.add_consumer(
            queues.queue_name(queues.RELEASES, prefix),
            destination=[name.replace("%h", socket.gethostname())],
            reply=True,
            timeout=30,
        )
        assert reply and "ok" in next(iter(reply[0].values())), reply
        started_before = scheduled.count()
        sender.send_task("releases.analyze", args=[second.pk])
        asked = AnalysisRun.objects.create(experiment=experiment, trigger="api")
        sender.send_task("analysis.run", args=[experiment.pk, asked.pk])

        def asked_done():
            asked.refresh_from_db()
            return asked.status == RunStatus.SUCCEEDED

        wait_for(asked_done, 60, f"the requested analysis {asked.pk}")
        assert _rolled_back(second)
        rolled_back_at = second.transitions.get(to_status=ReleaseStatus.ROLLED_BACK).at
        assert rolled_back_at < asked.started_at  # priority 0 before 3, across queues
        ran_between = scheduled.count() - started_before
        print(f"{ran_between} scheduled analyses ran between queueing the second release and "
              "the requested analysis")  # fmt: skip
        # A few (the one in hand, and those fetched while the worker was adding the queue),
        # not the hundreds queued ahead of them: without priorities they would wait for all.
        assert ran_between <= 5
        assert FLOOD - scheduled.count() > FLOOD // 2
    finally:
        for proc in procs:
            proc.kill()
        redis.kill()
        sender.close()
