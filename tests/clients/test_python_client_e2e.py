"""The Python client against real gunicorn (config/processes.py through tests/fault/stack.py):
the web server is killed (SIGKILL, master and workers) twice while a service tracks events and
evaluates a flag, and started again on the same port. Afterwards the database holds every
event exactly once (by event id) and one flag exposure per unit."""

import tempfile
import time
from pathlib import Path

import pytest
from abacus_client import AbacusClient

from assignments.models import FlagExposure, MetricEvent
from experiments.services import api_key_create
from flags.services import flag_create, flag_environment_update
from tests.fault.stack import base_env, free_port, gunicorn, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EVENTS = 3000


def test_events_survive_web_crashes_exactly_once(project, admin_user, metrics):
    production = project.environments.get(key="production")
    flag = flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
    flag_environment_update(
        flag=flag, environment=production, actor=admin_user, enabled=True,
        rules=[{"type": "rollout", "hash_attribute": "id", "weights": {"on": 0.5, "off": 0.5}}],
    )  # fmt: skip
    secret = api_key_create(project=project, name="svc", scopes=["ingest", "evaluate"]).secret
    var = Path(tempfile.mkdtemp(prefix="abacus-client-e2e-"))
    port = free_port()
    log = var / "web.log"
    web = gunicorn(base_env(var), port, log, workers=2, threads=4).start()
    base = f"http://127.0.0.1:{port}"
    client = None
    try:
        wait_healthy(base, log)
        client = AbacusClient(
            base, production.client_key, secret, batch_size=100, flush_interval=0.05,
            backoff_base=0.05, backoff_max=0.5, refresh_interval=0.5,
        )  # fmt: skip
        ids = []
        for i in range(EVENTS):
            unit = f"u{i % 500}"
            if i < 500:
                assert client.evaluate("new-checkout", unit).variation in ("on", "off")
            ids.append(client.track(unit, "purchase", 1.0))
            if i in (1000, 2000):
                web.kill()  # mid-traffic: batches in flight are cut
                time.sleep(0.5)
                web.start()
                wait_healthy(base, log)
            time.sleep(0.0005)
        assert client.close(timeout=60), client.stats()
        stored = list(
            MetricEvent.objects.filter(project=project).values_list("event_id", flat=True)
        )
        assert len(stored) == len(set(stored)) == EVENTS
        assert set(stored) == set(ids)
        assert FlagExposure.objects.filter(project=project).count() == 500
        stats = client.stats()
        assert stats["accepted"] + stats["duplicates"] == stats["sent"] == EVENTS + 500
        assert stats["retries"] > 0, stats
    finally:
        if client is not None:
            client.close(timeout=1)
        web.stop()


def test_streaming_brings_a_change_without_polling(project, admin_user):
    """With streaming=True a flag change reaches the client over /sub/<client key> (polling
    set to an hour), from gunicorn as abacus runs it."""
    production = project.environments.get(key="production")
    flag = flag_create(project=project, key="dark", name="Dark", actor=admin_user)
    secret = api_key_create(project=project, name="svc", scopes=["ingest", "evaluate"]).secret
    var = Path(tempfile.mkdtemp(prefix="abacus-client-e2e-"))
    port = free_port()
    log = var / "web.log"
    web = gunicorn(base_env(var), port, log, workers=1, threads=8).start()
    base = f"http://127.0.0.1:{port}"
    client = None
    try:
        wait_healthy(base, log)
        client = AbacusClient(base, production.client_key, secret, streaming=True,
                              refresh_interval=3600)  # fmt: skip
        assert client.evaluate("dark", "u1", track=False).reason == "off"
        time.sleep(1.0)  # the stream is open
        flag_environment_update(flag=flag, environment=production, actor=admin_user,
                                enabled=True, default_variation="on")  # fmt: skip
        deadline = time.monotonic() + 10
        while client.evaluate("dark", "u1", track=False).value is not True:
            assert time.monotonic() < deadline, "the stream brought no change"
            time.sleep(0.05)
        assert client.evaluate("dark", "u1", track=False).reason == "default"
    finally:
        if client is not None:
            client.close(timeout=1)
        web.stop()
