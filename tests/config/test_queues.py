"""Celery queues (config/queues.py): every task routed by name to its queue with its priority,
time limits on every task, and the worker command line. A real broker and workers:
tests/e2e/test_queues.py."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from config import processes, queues
from config.celery import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tasks():
    app.loader.import_default_modules()  # autodiscovery, as a worker does at start
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


PREFIX = settings.ABACUS_TASK_QUEUE  # a run sharing its Redis may set one: the roles stay


def _route(name, args=()):
    options = app.amqp.router.route({}, name, args=args)
    return options["queue"].name.removeprefix(f"{PREFIX}."), options["priority"]


def test_every_task_goes_to_one_of_the_four_queues_by_name(tasks):
    """Each task has its queue: none is left on the default queue, and the table names only
    tasks that exist (a renamed task would silently fall back to its app's queue)."""
    assert set(queues.ROUTES) <= set(tasks)
    for name in tasks:
        queue, _ = _route(name, args=(1, 2))
        assert queue in set(queues.ROLES), name
    assert _route("releases.analyze") == ("releases", 0)
    assert _route("releases.tick") == ("releases", 0)
    assert _route("flags.apply_scheduled_changes") == ("ingest", 0)
    assert _route("notifications.deliver") == ("notify", 3)
    assert _route("analysis.deliver_webhook") == ("notify", 3)
    assert _route("analysis.schedule_running") == ("analysis", 6)
    assert _route("assignments.schedule_event_maintenance") == ("ingest", 6)
    assert _route("assignments.maintain_events", args=(1,)) == ("ingest", 6)
    # A later task of an app goes to its app's queue.
    assert _route("assignments.compact_events") == ("ingest", 0)


def test_an_analysis_a_person_asked_for_goes_before_the_beats(tasks):
    """On Redis 0 is taken first: a requested run (it carries its run id) at 3, the beat's
    fan-out (no run id) at 6, behind notifications and far behind releases."""
    assert _route("analysis.run", args=(7, 12)) == ("analysis", 3)
    assert _route("analysis.run", args=(7,)) == ("analysis", 6)
    assert _route("analysis.run", args=(7, None, None)) == ("analysis", 6)
    # An explicit priority (a retry keeps its message's) wins over the route's.
    options = app.amqp.router.route({"priority": 6}, "analysis.run", args=(7, 12))
    assert options["priority"] == 6


def test_every_queue_is_declared_and_a_worker_without_q_consumes_them_all():
    """make run's one worker (no -Q) consumes the four queues and the default one (tasks an
    older abacus queued there)."""
    names = [queue.name for queue in app.conf.task_queues]
    roles = ["releases", "ingest", "analysis", "notify"]
    assert sorted(names) == sorted(
        [queues.default_queue(PREFIX)] + [queues.queue_name(r, PREFIX) for r in roles]
    )
    assert app.conf.task_default_queue == queues.default_queue(PREFIX)
    assert "-Q" not in processes.worker(name="w@%h")
    args = processes.worker(name="w@%h", queues=["releases", "ingest"])
    assert args[args.index("-Q") + 1] == "releases,ingest"


def test_a_prefix_keeps_deployments_sharing_a_redis_apart(monkeypatch, reload_settings):
    """ABACUS_TASK_QUEUE=blue: every queue is blue.<role>, the default queue blue."""
    monkeypatch.setenv("ABACUS_TASK_QUEUE", "blue")
    fresh = reload_settings()
    assert fresh.CELERY_TASK_DEFAULT_QUEUE == "blue"
    assert sorted(q.name for q in fresh.CELERY_TASK_QUEUES) == [
        "blue", "blue.analysis", "blue.ingest", "blue.notify", "blue.releases",
    ]  # fmt: skip
    [router] = fresh.CELERY_TASK_ROUTES
    assert router("releases.analyze", (3,), {}, {}) == {"queue": "blue.releases", "priority": 0}


def test_every_task_has_soft_and_hard_time_limits(tasks):
    """A soft limit (the task can clean up) below a hard one (the process is killed); release
    and flag work is short, so a slot of those pools is never held for long; no hard limit
    reaches Redis's visibility timeout (an hour), which would deliver a running task again."""
    for name, task in tasks.items():
        assert task.soft_time_limit and task.time_limit, name
        assert task.soft_time_limit < task.time_limit < 3600, name
        role, _ = queues.destination(name, (1, 2))
        if role in (queues.RELEASES, queues.INGEST):
            assert task.time_limit <= 300, name


def test_the_operations_page_lists_every_routed_task_with_its_queue():
    """docs/operations.md's queue table names each task of the routing table on its queue's
    row (a task routed by its app's name goes where the row says its app's tasks go)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    for name, (role, _) in queues.ROUTES.items():
        row = re.search(rf"^\| `{re.escape(role)}` \|.*`{re.escape(name)}`", text, re.M)
        assert row, f"{name} ({role}) is missing from docs/operations.md's queue table"
    for app_name, (role, _) in queues.APP_QUEUES.items():
        row = re.search(rf"^\| `{re.escape(role)}` \|.*`{re.escape(app_name)}\.\*`", text, re.M)
        assert row, f"{app_name}.* ({role}) is missing from docs/operations.md's queue table"
