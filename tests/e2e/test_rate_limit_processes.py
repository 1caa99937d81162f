"""The per-key rate limit across processes: gunicorn with two workers, each counting in memory
and sending its counts every 0.1 s on Redis (core/serving_feed.py), or appending to the shared
counter files without Redis. Requests spaced wider than ``STALE_SECONDS`` are limited exactly,
whichever worker answers (each worker alone would let the limit through twice): a worker whose
count of the key is older than that starts again from the shared total."""

import time

import pytest
import requests

from core import serving_feed
from experiments.services import api_key_create, project_create
from tests.fault.stack import base_env, free_port, gunicorn, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIMIT = 8


def test_the_limit_is_shared_by_the_workers(tmp_path, admin_user):
    project = project_create(slug="limited", name="Limited", owner=admin_user)
    secret = api_key_create(project=project, name="svc", scopes=["assign"]).secret
    port = free_port()
    env = base_env(tmp_path, ABACUS_RATE_LIMIT_PER_MINUTE=str(LIMIT))
    log = tmp_path / "web.log"
    web = gunicorn(env, port, log, workers=2, threads=4).start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, log)
        if time.time() % 60 > 50:  # the fixed window must not end during the test
            time.sleep(61 - time.time() % 60)
        statuses = []
        for i in range(2 * LIMIT):
            # A new connection each time: gunicorn hands it to either worker.
            response = requests.post(
                f"{base}/api/v1/assign",
                json={"unit_id": f"u{i}"},
                headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
                timeout=10,
            )
            statuses.append(response.status_code)
            time.sleep(serving_feed.STALE_SECONDS + 0.05)
        assert statuses == [200] * LIMIT + [429] * LIMIT, str(statuses)
    finally:
        web.stop()
    assert "Traceback" not in log.read_text()
