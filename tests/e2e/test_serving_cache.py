"""The serving caches across processes: gunicorn (two worker processes, each with its cached
keys, specs, flags and assignments) on the test database, changed from this process.

Every change must be served by the very next request, in whichever worker answers it: the
server runs with ``ABACUS_SERVING_RECHECK_SECONDS=600``, so only the serving generation in the
shared cache (Redis, or on SQLite this process's file cache, which `base_env` hands the server)
can tell the workers. Each check sends several requests, so both workers answer.
"""

import pytest
import requests

from experiments.models import Environment
from experiments.services import (
    api_key_create,
    api_key_revoke,
    experiment_pause,
    experiment_ramp,
    experiment_update,
    metric_create,
)
from flags.services import flag_create, flag_environment_update
from tests.factories import running_experiment
from tests.fault.stack import base_env, free_port, gunicorn, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TRIES = 12  # requests per check: both workers answer some


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    """One server for the module's tests (each test makes its own project)."""
    tmp_path = tmp_path_factory.mktemp("serving-cache")
    port = free_port()
    env = base_env(tmp_path, ABACUS_SERVING_RECHECK_SECONDS="600")
    log = tmp_path / "web.log"
    web = gunicorn(env, port, log, workers=2, threads=4).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, log)
        yield base
    finally:
        web.stop()


@pytest.fixture
def world(admin_user):
    from experiments.services import project_create

    project = project_create(slug="cached", name="Cached", owner=admin_user)
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    experiment = running_experiment(project, coverage=0.5)
    flag = flag_create(project=project, key="nav", name="Nav", actor=admin_user)
    production = Environment.objects.get(project=project, key="production")
    flag_environment_update(flag=flag, environment=production, actor=admin_user, enabled=True)
    created = api_key_create(project=project, name="svc", scopes=["assign", "evaluate"])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {created.secret}"
    return {
        "project": project,
        "experiment": experiment,
        "flag": flag,
        "production": production,
        "key": created.api_key,
        "session": session,
        "user": admin_user,
    }


def _assign(base, session, unit, attributes=None):
    r = session.post(f"{base}/api/v1/assign", json={"unit_id": unit, "attributes": attributes})
    return r.status_code, r.json()


def _flag(base, session, unit="u1"):
    r = session.post(f"{base}/api/v1/evaluate", json={"unit_id": unit, "flags": ["nav"]})
    assert r.status_code == 200, r.text
    return r.json()["flags"]["nav"]


def test_a_revoked_key_is_refused_by_every_worker_at_once(server, world):
    """Both workers have the key cached; after the revocation commits, the next request to
    either is a 401."""
    session = world["session"]
    for i in range(TRIES):
        assert _assign(server, session, f"u{i}")[0] == 200
    api_key_revoke(api_key=world["key"])
    for i in range(TRIES):
        status, body = _assign(server, session, f"u{i}")
        assert status == 401, body


def test_a_flag_change_is_served_by_every_worker_at_once(server, world):
    """Turning the flag off is the next evaluation's answer, in every worker."""
    session = world["session"]
    for _ in range(TRIES):
        assert _flag(server, session)["reason"] != "off"
    flag_environment_update(
        flag=world["flag"], environment=world["production"], actor=world["user"], enabled=False
    )
    for _ in range(TRIES):
        assert _flag(server, session)["reason"] == "off"


def test_lifecycle_changes_are_served_at_once_and_stored_variants_stay(server, world):
    """A ramp includes new units at once (stored ones keep their variant, from the cache); a new
    phase applies the new audience at once and keeps the stored variants; a pause answers
    control at once."""
    session, experiment = world["session"], world["experiment"]
    units = [f"unit-{i}" for i in range(40)]

    def variants(attributes=None):
        answers = {u: _assign(server, session, u, attributes)[1]["assignments"] for u in units}
        return {u: a["checkout-v2"]["variant"] for u, a in answers.items() if a}

    before = variants({"country": "US"})
    assert 0 < len(before) < len(units)  # half the units at coverage 0.5
    assert variants({"country": "US"}) == before  # returning units, from the caches
    experiment_ramp(experiment=experiment, coverage=1.0)
    ramped = variants({"country": "US"})
    assert len(ramped) == len(units) and {u: ramped[u] for u in before} == before
    experiment_update(experiment=experiment, targeting={"country": "DE"})
    assert variants({"country": "US"}) == {}
    assert variants({"country": "DE"}) == ramped
    experiment_pause(experiment=experiment)
    assert set(variants({"country": "DE"}).values()) == {"control"}
