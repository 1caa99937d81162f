"""End to end: real web server and real Celery worker as subprocesses, over HTTP.

Creates an experiment through the user API, assigns units and posts events through the service
API, triggers an analysis, and polls the results API until the worker's snapshot arrives; then
checks the numbers against a direct computation on the same data.
"""

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from scipy import stats

from config import processes
from experiments.services import (
    api_key_create,
    metric_create,
    project_create,
    user_token_create,
)
from tests.fault.stack import base_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_stack(
    *, beat: bool = False, env: dict[str, str] | None = None, pool: str | None = "solo"
) -> Iterator[tuple]:
    """gunicorn + a Celery worker (and beat) on the test database and a private broker;
    ``pool``: the worker's (None: Celery's default, prefork, as ``make run``'s worker)."""
    port = free_port()
    var = tempfile.mkdtemp(prefix="abacus-e2e-")
    env = base_env(Path(var), **(env or {}))
    logs = Path(var)
    commands = {
        "web": processes.web(bind=f"127.0.0.1:{port}", workers=2, access_log=False),
        "worker": processes.worker(name=f"e2e-{port}@%h", pool=pool),
    }
    if beat:
        commands["beat"] = processes.beat(schedule=logs / "celerybeat-schedule")
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=open(logs / f"{name}.log", "w"),
            stderr=subprocess.STDOUT,
        )
        for name, cmd in commands.items()
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.25)
        else:
            raise AssertionError("web server did not start:\n" + (logs / "web.log").read_text())
        yield base, logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def stack():
    with running_stack() as running:
        yield running


def test_flow_from_definition_to_worker_snapshot(stack, django_user_model):
    """A snapshot computed by the worker matches a direct computation on the same data."""
    base, logs = stack
    user = django_user_model.objects.create_user("pm", "pm@example.com", "pw-pm-12345")
    project = project_create(slug="e2e", name="E2E", owner=user)
    token = user_token_create(user=user).token
    secret = api_key_create(project=project, name="svc", scopes=["assign", "ingest"]).secret
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    people = requests.Session()
    people.headers["Authorization"] = f"Token {token}"
    services = requests.Session()
    services.headers["Authorization"] = f"Bearer {secret}"

    r = people.post(
        f"{base}/api/v1/projects/e2e/experiments/",
        json={
            "key": "checkout-v2",
            "name": "Checkout v2",
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5},
            ],
            "metrics": [{"metric": "purchase", "role": "primary"}],
        },
    )
    assert r.status_code == 201, r.text
    # An A/A companion on the same units: its arms differ in nothing, so it must not decide.
    r = people.post(
        f"{base}/api/v1/projects/e2e/experiments/",
        json={
            "key": "aa-check",
            "name": "A/A check",
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "same", "weight": 0.5},
            ],
            "metrics": [{"metric": "purchase", "role": "primary"}],
        },
    )
    assert r.status_code == 201, r.text
    assert people.post(f"{base}/api/v1/projects/e2e/experiments/aa-check/start").ok
    r = people.post(f"{base}/api/v1/projects/e2e/experiments/checkout-v2/start")
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    started = datetime.fromisoformat(r.json()["started_at"].replace("Z", "+00:00"))

    units = [f"u{i}" for i in range(600)]
    r = services.post(f"{base}/api/v1/assign/bulk", json={"units": [{"unit_id": u} for u in units]})
    assert r.status_code == 200, r.text
    variant_of = {
        row["unit_id"]: row["assignments"]["checkout-v2"]["variant"] for row in r.json()["results"]
    }
    aa_variant_of = {
        row["unit_id"]: row["assignments"]["aa-check"]["variant"] for row in r.json()["results"]
    }
    again = services.post(f"{base}/api/v1/assign", json={"unit_id": "u7"}).json()
    assert again["assignments"]["checkout-v2"]["variant"] == variant_of["u7"]  # sticky

    rng = np.random.default_rng(3)
    events, converted = [], {}
    for i, u in enumerate(units):
        exposed_at = started + timedelta(milliseconds=1 + i)
        events.append(
            {
                "event_id": f"x-{u}",
                "type": "exposure",
                "experiment": "checkout-v2",
                "variant": variant_of[u],
                "unit_id": u,
                "timestamp": exposed_at.isoformat(),
            }
        )
        events.append(
            {
                "event_id": f"aa-{u}",
                "type": "exposure",
                "experiment": "aa-check",
                "variant": aa_variant_of[u],
                "unit_id": u,
                "timestamp": exposed_at.isoformat(),
            }
        )
        p = 0.4 if variant_of[u] == "treatment" else 0.2  # a clear improvement
        converted[u] = bool(rng.random() < p)
        if converted[u]:
            events.append(
                {
                    "event_id": f"p-{u}",
                    "type": "metric",
                    "name": "purchase",
                    "unit_id": u,
                    "value": 1,
                    "timestamp": (exposed_at + timedelta(milliseconds=500)).isoformat(),
                }
            )
    events.append({"event_id": "bad", "type": "metric", "unit_id": "u1", "timestamp": "nope"})
    r = services.post(f"{base}/api/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == len(events) - 1
    assert body["rejected"] == [
        {"index": len(events) - 1, "field": "timestamp", "message": body["rejected"][0]["message"]}
    ]
    assert (
        services.post(f"{base}/api/v1/events", json={"events": events[:10]}).json()["duplicates"]
        == 10
    )

    time.sleep(max(0.0, (started + timedelta(seconds=2) - datetime.now(UTC)).total_seconds()))
    r = people.post(f"{base}/api/v1/projects/e2e/experiments/checkout-v2/analyze")
    assert r.status_code == 202, r.text
    results = None
    for _ in range(240):
        results = people.get(f"{base}/api/v1/projects/e2e/experiments/checkout-v2/results").json()
        if results.get("computed_at"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("no snapshot arrived:\n" + (logs / "worker.log").read_text()[-5000:])

    [row] = results["metrics"]
    c = [converted[u] for u in units if variant_of[u] == "control"]
    t = [converted[u] for u in units if variant_of[u] == "treatment"]
    assert row["control_n"] == len(c) and row["variant_n"] == len(t)
    assert row["control_mean"] == pytest.approx(np.mean(c), abs=1e-12)
    assert row["variant_mean"] == pytest.approx(np.mean(t), abs=1e-12)
    assert row["lift_abs"] == pytest.approx(np.mean(t) - np.mean(c), abs=1e-12)
    # The fixed-horizon p-value is Welch's t-test on the absolute difference, computed here
    # directly from the per-unit values (proportions' variance p(1 - p), as gbstats does).
    mc, mt, nc, nt = np.mean(c), np.mean(t), len(c), len(t)
    vc, vt = mc * (1 - mc), mt * (1 - mt)
    se = np.sqrt(vt / nt + vc / nc)
    dof = (vc / nc + vt / nt) ** 2 / ((vc / nc) ** 2 / (nc - 1) + (vt / nt) ** 2 / (nt - 1))
    assert row["lift_rel"] == pytest.approx(mt / mc - 1, rel=1e-9)
    assert row["fixed_p_value"] == pytest.approx(2 * stats.t.sf(abs((mt - mc) / se), dof), rel=1e-6)
    # The always-valid p-value (no planned sample: the confidence sequence, tuned to 5,000
    # units, Waudby-Smith et al. 2023 eq. 155) from the per-unit values directly.
    n_all, var_diff = nc + nt, vt / nt + vc / nc
    rho2 = (-2 * np.log(0.05) + np.log(1 - 2 * np.log(0.05))) / 5000
    s_stat = (mt - mc) ** 2 * n_all / var_diff
    log_e = rho2 * s_stat / (2 * (n_all * rho2 + 1)) - 0.5 * np.log(n_all * rho2 + 1)
    assert row["p_value"] == pytest.approx(min(1.0, float(np.exp(-log_e))), rel=1e-6)
    # A 20% -> 40% conversion change over 600 units is clear even under continuous peeking.
    assert row["status"] == "improved" and row["ci_low"] > 0
    assert results["recommendation"]["action"] == "keep", results["recommendation"]
    assert results["health"]["units"] == len(units)

    r = people.post(f"{base}/api/v1/projects/e2e/experiments/aa-check/analyze")
    assert r.status_code == 202, r.text
    for _ in range(240):
        aa = people.get(f"{base}/api/v1/projects/e2e/experiments/aa-check/results").json()
        if aa.get("computed_at"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("no A/A snapshot:\n" + (logs / "worker.log").read_text()[-5000:])
    assert aa["recommendation"]["action"] == "extend", aa["recommendation"]
    [aa_row] = aa["metrics"]
    assert aa_row["status"] == "neutral" and aa_row["ci_low"] < 0 < aa_row["ci_high"]
