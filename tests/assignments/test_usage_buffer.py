"""The per-process buffer of /evaluate's counts: merged in memory, written in one statement by a
flush, kept through a failing flush, bounded, flushed early when large and at process exit, and
never in the way of a request. (The thread's interval: tests/assignments/test_evaluate.py.)"""

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from assignments.services import flag_usage_flush, usage_buffer
from experiments.models import Environment
from experiments.services import api_key_create
from flags.models import FlagUsage
from flags.services import flag_create, flag_delete, flag_environment_update, flag_update

pytestmark = pytest.mark.django_db
DAY = date(2026, 12, 2)


def at(minute: int) -> datetime:
    return datetime(2026, 12, 2, 10, minute, tzinfo=UTC)


@pytest.fixture
def nav(project):
    return flag_create(project=project, key="nav", name="Nav")


@pytest.fixture
def theme(project):
    return flag_create(project=project, key="theme", name="Theme")


@pytest.fixture
def env(project):
    return {e.key: e.pk for e in Environment.objects.filter(project=project)}


def usage():
    return {
        (u.flag.key, u.environment.key, u.variation, u.day): (u.count, u.last_at)
        for u in FlagUsage.objects.select_related("flag", "environment")
    }


def count(environment_id, flag, variation="on", n=1, minute=1):
    usage_buffer.flag_usage_buffer(environment_id, {(flag.pk, variation, DAY): (n, at(minute))})


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_counts_merge_in_memory_and_one_statement_writes_them(
    nav, theme, env, django_assert_num_queries
):
    count(env["production"], nav, n=1, minute=1)
    count(env["production"], theme, variation="off", minute=1)
    count(env["production"], nav, n=2, minute=3)
    count(env["staging"], nav, minute=2)
    assert not FlagUsage.objects.exists()
    with django_assert_num_queries(1):
        assert flag_usage_flush() == 3
    assert usage() == {
        ("nav", "production", "on", DAY): (3, at(3)),
        ("theme", "production", "off", DAY): (1, at(1)),
        ("nav", "staging", "on", DAY): (1, at(2)),
    }
    count(env["production"], nav, minute=0)  # the next flush adds; last_at keeps the latest
    assert flag_usage_flush() == 1
    assert usage()[("nav", "production", "on", DAY)] == (4, at(3))
    assert flag_usage_flush() == 0


def test_a_failing_flush_keeps_its_counts_for_the_next(nav, env, monkeypatch):
    count(env["production"], nav, n=2, minute=1)

    def down(counts):
        raise OperationalError("the database is down")

    monkeypatch.setattr(usage_buffer, "flag_usage_upsert", down)
    with pytest.raises(OperationalError):
        flag_usage_flush()
    count(env["production"], nav, minute=2)  # counted while the database was down
    assert usage_buffer.buffer.pending() == {(nav.pk, env["production"], "on", DAY): (3, at(2))}
    monkeypatch.undo()
    assert flag_usage_flush() == 1
    assert usage() == {("nav", "production", "on", DAY): (3, at(2))}


def test_while_flushes_fail_the_buffer_is_bounded_and_the_drop_logged(
    nav, theme, env, monkeypatch, caplog
):
    monkeypatch.setattr(usage_buffer, "MAX_KEYS", 2)
    count(env["production"], nav)
    count(env["production"], nav, variation="off")
    count(env["production"], theme, n=5)  # a third key: dropped
    count(env["production"], nav, minute=2)  # a buffered key still counts
    assert len(usage_buffer.buffer.pending()) == 2
    with caplog.at_level(logging.ERROR, logger=usage_buffer.__name__):
        assert flag_usage_flush() == 2
    assert "5 evaluation counts dropped" in caplog.text
    assert usage() == {
        ("nav", "production", "on", DAY): (2, at(2)),
        ("nav", "production", "off", DAY): (1, at(1)),
    }


def test_counts_of_a_flag_deleted_meanwhile_are_skipped_not_fatal(nav, theme, env):
    count(env["production"], nav)
    count(env["production"], theme)
    flag_delete(flag=flag_update(flag=theme, archived=True))
    assert flag_usage_flush() == 2
    assert usage() == {("nav", "production", "on", DAY): (1, at(1))}


def test_a_failing_database_never_reaches_a_request(
    project, nav, monkeypatch, settings, usage_counts_buffer, caplog
):
    """The thread's flushes fail (logged, counts kept) while /evaluate answers as usual."""
    flag_environment_update(
        flag=nav,
        environment=Environment.objects.get(project=project, key="production"),
        enabled=True,
        default_variation="on",
    )
    failures = []

    def down(counts):
        failures.append(len(counts))
        raise OperationalError("the database is down")

    monkeypatch.setattr(usage_buffer, "flag_usage_upsert", down)
    settings.ABACUS_USAGE_FLUSH_SECONDS = 0.05
    usage_counts_buffer.background = True
    client = APIClient()
    secret = api_key_create(project=project, name="svc", scopes=["evaluate"]).secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    with caplog.at_level(logging.ERROR, logger=usage_buffer.__name__):
        for _ in range(3):
            r = client.post("/api/v1/evaluate", {"unit_id": "u1"}, format="json")
            assert r.status_code == 200 and r.json()["flags"]["nav"]["variation"] == "on"
        assert wait_for(lambda: len(failures) >= 2)
    assert "flush failed" in caplog.text
    [(n, _)] = usage_counts_buffer.pending().values()
    assert n == 3


@pytest.mark.django_db(transaction=True)
def test_a_large_buffer_is_flushed_at_once(
    nav, theme, env, settings, monkeypatch, usage_counts_buffer
):
    settings.ABACUS_USAGE_FLUSH_SECONDS = 60
    monkeypatch.setattr(usage_buffer, "FLUSH_AT_KEYS", 2)
    usage_counts_buffer.background = True
    count(env["production"], nav)
    time.sleep(0.3)
    assert not FlagUsage.objects.exists()  # below the size: it waits for the interval
    count(env["production"], theme)
    assert wait_for(lambda: FlagUsage.objects.count() == 2)


@pytest.mark.django_db(transaction=True)
def test_a_process_writes_its_counts_when_it_exits(nav, env):
    """A process (a gunicorn worker stopping, a command ending) flushes at exit, although its
    thread's interval is an hour."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{db['NAME']}"
    else:
        url = (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    code = (
        "import django; django.setup()\n"
        "from datetime import date, datetime, UTC\n"
        "from assignments.services.usage_buffer import flag_usage_buffer\n"
        f"flag_usage_buffer({env['production']}, "
        f"{{({nav.pk}, 'on', date(2026, 12, 2)): (7, datetime(2026, 12, 2, 10, 1, tzinfo=UTC))}})\n"
    )
    environ = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ABACUS_USAGE_FLUSH_SECONDS": "3600",
    }
    subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        cwd=str(django_settings.BASE_DIR),
        check=True,
        timeout=120,
    )
    assert usage() == {("nav", "production", "on", DAY): (7, at(1))}
