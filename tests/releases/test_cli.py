"""``abacus-release``, the CI/CD gate, run as a real process against a live server: each exit
code (0 completed, 1 rolled back, 2 usage or server error, 3 timeout), progress lines while it
waits, and no Django in the process. The waiting logic's heartbeat and retries are tested in
process with a fake clock."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from django.utils import timezone

from experiments.services import api_key_create, metric_create, user_token_create
from flags.services import flag_create, flag_environment_update
from releases import cli
from releases.models import Release, ReleaseStatus
from releases.monitor import release_analyze

from .conftest import simulate

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "abacus-release"


def gate(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The console script when installed (``make install``), else ``python -m releases.cli``."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "releases.cli"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    return subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- without a server -------------------------------------------------------------------------


def test_the_gate_imports_no_django():
    code = (
        "import sys, releases.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'celery', 'experiments', 'flags', 'config'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


def test_the_file_runs_alone(tmp_path):
    """A CI machine may copy releases/cli.py alone (docs/releases.md): it runs as a script."""
    alone = tmp_path / "cli.py"
    alone.write_text((ROOT / "releases" / "cli.py").read_text())
    done = subprocess.run(
        [sys.executable, str(alone), "--help"], cwd=tmp_path, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "start" in done.stdout and "rollback" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["start", "--url", "http://x", "--token", "t", "--project", "p"],  # no --flag ...
        ["status", "--url", "http://x", "--token", "t", "--project", "p"],  # no --id
        ["status", "--url", "http://x", "--token", "t", "--project", "p", "--id", "seven"],
        ["status", "--token", "t", "--project", "p", "--id", "1"],  # no url
        ["status", "--url", "http://x", "--project", "p", "--id", "1"],  # no token
        ["status", "--url", "ftp://x", "--token", "t", "--project", "p", "--id", "1"],
        ["wait", "--url", "http://x", "--token", "t", "--project", "p", "--id", "1",
         "--timeout", "-1"],
        ["start", "--url", "http://x", "--token", "t", "--project", "p", "--flag", "f",
         "--environment", "e", "--variation", "v", "--steps", "1,lots"],
        ["start", "--url", "http://x", "--token", "t", "--project", "p", "--flag", "f",
         "--environment", "e", "--variation", "v", "--metric", "errors:guardrail:much"],
        ["explode"],
    ],
)  # fmt: skip
def test_bad_arguments_exit_2(args):
    code, out, err = finish(gate(*args))
    assert code == 2, (out, err)
    assert "error" in err


def test_a_server_that_is_down_exits_2():
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = finish(
        gate("status", "--id", "1", env={"ABACUS_URL": url, "ABACUS_TOKEN": "abk_x_y",
                                         "ABACUS_PROJECT": "shop"})
    )  # fmt: skip
    assert code == 2 and "cannot reach" in err, err


def test_the_body_from_the_options():
    args = cli.build_parser().parse_args(
        ["start", "--url", "http://x", "--token", "t", "--project", "p", "--flag", "f",
         "--environment", "production", "--variation", "on", "--baseline", "off",
         "--steps", "5,50,100", "--step-minutes", "2.5", "--step-units", "300",
         "--metric", "error-rate", "--metric", "latency-p95:guardrail:0.05",
         "--metric", "purchase:primary", "--no-auto-rollback", "--alpha", "0.01"]
    )  # fmt: skip
    assert cli.release_body(args) == {
        "flag": "f", "environment": "production", "variation": "on", "kind": "canary",
        "baseline_variation": "off",
        "steps": [{"percent": p, "min_minutes": 2.5, "min_units": 300} for p in (5, 50, 100)],
        "metrics": [{"metric": "error-rate"},
                    {"metric": "latency-p95", "role": "guardrail", "non_inferiority_margin": 0.05},
                    {"metric": "purchase", "role": "primary"}],
        "auto_rollback": False, "alpha": 0.01,
    }  # fmt: skip
    blue_green = cli.build_parser().parse_args(
        ["start", "--flag", "f", "--environment", "e", "--variation", "v", "--kind",
         "blue_green", "--step-minutes", "15"]
    )  # fmt: skip
    assert cli.release_body(blue_green)["steps"] == [
        {"percent": 100, "min_minutes": 15, "min_units": 200}
    ]
    plain = cli.build_parser().parse_args(
        ["start", "--flag", "f", "--environment", "e", "--variation", "v"]
    )
    assert "steps" not in cli.release_body(plain) and "metrics" not in cli.release_body(plain)


class FakeClient:
    """Answers a scripted sequence of releases (or errors) and records nothing else."""

    def __init__(self, answers):
        self.answers = list(answers)

    def release(self, release_id):
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _release(status="running", step=0, percent=10, action="hold", reason="Collecting."):
    return {"id": 7, "flag": "f", "environment": "production", "variation": "on",
            "baseline_variation": "off", "status": status, "step": step, "percent": percent,
            "steps": [{"percent": 10}, {"percent": 100}],
            "decision": {"action": action, "reasons": [reason], "waits_for": ["100 units"]},
            "transitions": [{"reason": "harm on errors", "actor": "monitor"}]}  # fmt: skip


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_waiting_prints_changes_and_a_heartbeat_a_minute():
    clock = FakeTime()
    same = [_release()] * 30
    answers = [*same, _release(step=1, percent=100, action="advance", reason="Advancing."),
               _release(status="completed", step=1, percent=100, action="complete")]  # fmt: skip
    out = io.StringIO()
    code = cli.wait_for(
        FakeClient(answers), 7, timeout=None, poll=5, out=out, clock=clock.clock,
        sleep=clock.sleep,
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    assert code == 0
    assert "step 1/2 at 10%; decision hold: Collecting. (waits for: 100 units)" in lines[0]
    heartbeats = [line for line in lines if "still running" in line]
    assert len(heartbeats) == 2  # 150 s of the same state: at 60 s and 120 s
    assert "step 2/2 at 100%; decision advance: Advancing." in lines[-3]
    assert "completed" in lines[-1] and "serves on to everyone" in lines[-1]


def test_waiting_survives_a_short_outage_but_not_a_long_one():
    clock = FakeTime()
    down = cli.GateError("cannot reach http://x: refused", transient=True)
    answers = [_release(), down, down, _release(status="rolled_back", action="rollback")]
    out = io.StringIO()
    code = cli.wait_for(FakeClient(answers), 7, timeout=None, poll=1, out=out,
                        clock=clock.clock, sleep=clock.sleep)  # fmt: skip
    assert code == 1 and out.getvalue().count("retrying") == 2
    assert "rolled back" in out.getvalue() and "harm on errors" in out.getvalue()
    with pytest.raises(cli.GateError):
        cli.wait_for(FakeClient([_release(), down]), 7, timeout=None, poll=1, out=out,
                     clock=clock.clock, sleep=clock.sleep)  # fmt: skip
    refused = cli.GateError("HTTP 401: Invalid token.")
    with pytest.raises(cli.GateError):
        cli.wait_for(FakeClient([_release(), refused]), 7, timeout=None, poll=1, out=out,
                     clock=clock.clock, sleep=clock.sleep)  # fmt: skip


def test_waiting_times_out_with_3():
    clock = FakeTime()
    out = io.StringIO()
    code = cli.wait_for(FakeClient([_release()]), 7, timeout=30, poll=7, out=out,
                        clock=clock.clock, sleep=clock.sleep)  # fmt: skip
    assert code == 3 and clock.now == 30
    assert "timed out after 30 s" in out.getvalue()


# -- against a live server --------------------------------------------------------------------


@pytest.fixture
def world(live_server, project, admin_user, django_user_model):
    """A flag on in production and staging, a production release key, a person's token."""
    flag = flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
    for env in project.environments.filter(key__in=["production", "staging"]):
        flag_environment_update(
            flag=flag, environment=env, actor=admin_user, enabled=True, default_variation="off"
        )
    metric_create(project=project, key="purchase", name="Purchase", kind="binomial",
                  event_name="purchase")  # fmt: skip
    key = api_key_create(project=project, name="deploy-bot", scopes=["release"]).secret
    staging_key = api_key_create(
        project=project, name="staging-bot", scopes=["release"], environment="staging"
    ).secret
    token = user_token_create(user=admin_user).token
    env = {"ABACUS_URL": live_server.url, "ABACUS_TOKEN": key, "ABACUS_PROJECT": "shop"}
    return {"url": live_server.url, "key": key, "staging_key": staging_key, "token": token,
            "env": env, "flag": flag}  # fmt: skip


START = ["start", "--flag", "new-checkout", "--environment", "production", "--variation", "on"]


def _wait_for_release(timeout: float = 30) -> Release:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        release = Release.objects.order_by("-id").first()
        if release is not None:
            return release
        time.sleep(0.1)
    raise AssertionError("the gate created no release")


def test_start_without_wait_prints_the_id_and_status_reads_it(world):
    code, out, err = finish(gate(*START, "--metric", "purchase", env=world["env"]))
    assert code == 0, err
    release = Release.objects.get()
    assert out.strip() == str(release.pk)
    assert release.status == ReleaseStatus.RUNNING
    assert release.transitions.first().actor_label == "key:deploy-bot"
    # A person's token works too (Token scheme), and --json prints the API's release.
    person = {**world["env"], "ABACUS_TOKEN": world["token"]}
    code, out, err = finish(gate("status", "--id", str(release.pk), "--json", env=person))
    assert code == 0, err
    assert json.loads(out)["metrics"] == [
        {"metric": "purchase", "role": "guardrail", "non_inferiority_margin": None}
    ]
    code, out, err = finish(gate("status", "--id", str(release.pk), env=world["env"]))
    assert code == 0 and "running, step 1/5 at 1%" in out, (out, err)
    assert f"/p/shop/releases/{release.pk}/" in out


def test_completed_exits_0(world, project):
    """The monitor (called here as the beat's task would) advances and completes the release
    on harmless traffic while the gate waits; the gate prints each step and exits 0."""
    proc = gate(*START, "--steps", "50,100", "--step-minutes", "0", "--step-units", "0",
                "--wait", "--poll", "0.2", "--timeout", "60", env=world["env"])  # fmt: skip
    release = _wait_for_release()
    production = project.environments.get(key="production")
    rng = np.random.default_rng(3)
    first = release.step_started_at
    simulate(project=project, environment=production, flag=world["flag"], rng=rng, units=700,
             at=first + timedelta(seconds=1), share_new=0.5, prefix="a")  # fmt: skip
    # The next step starts at the wall clock's now: past these exposures, so that they fall in
    # the baseline's window before it (on a fast machine the lines above take under a second).
    time.sleep(max(0.5, (first + timedelta(seconds=2) - timezone.now()).total_seconds()))
    check = release_analyze(release.pk, through=first + timedelta(seconds=2))
    assert check.action == "advance", check.reasons
    release.refresh_from_db()
    second = release.step_started_at
    simulate(project=project, environment=production, flag=world["flag"], rng=rng, units=300,
             at=second + timedelta(seconds=1), share_new=1.0, prefix="b")  # fmt: skip
    time.sleep(0.5)
    # A 100% step compares with the baseline's units of an equally long window before it.
    check = release_analyze(release.pk, through=second + (second - first) + timedelta(seconds=2))
    assert check.action == "complete", (check.reasons, check.waits_for)
    code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert "step 1/2 at 50%" in out and "step 2/2 at 100%" in out
    assert "completed: new-checkout serves on to everyone in production" in out
    release.refresh_from_db()
    assert release.status == ReleaseStatus.COMPLETED


def test_rolled_back_while_waiting_exits_1(world):
    code, out, err = finish(gate(*START, env=world["env"]))
    release_id = out.strip()
    proc = gate("wait", "--id", release_id, "--poll", "0.2", "--timeout", "60", env=world["env"])
    time.sleep(1.0)
    r = requests.post(
        f"{world['url']}/api/v1/projects/shop/releases/{release_id}/rollback",
        json={"reason": "smoke tests failed"},
        headers={"Authorization": f"Token {world['token']}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    code, out, err = finish(proc)
    assert code == 1, (out, err)
    assert "rolled back" in out and "smoke tests failed (by alice)" in out


def test_failed_exits_1(world, admin_user, project):
    """Turning the flag off under a release fails it: the change did not ship."""
    code, out, err = finish(gate(*START, env=world["env"]))
    release_id = int(out.strip())
    production = project.environments.get(key="production")
    flag_environment_update(
        flag=world["flag"], environment=production, actor=admin_user, enabled=False
    )
    release_analyze(release_id)
    code, out, err = finish(gate("wait", "--id", str(release_id), env=world["env"]))
    assert code == 1 and "failed" in out, (out, err)


def test_server_refusals_exit_2_with_the_servers_message(world):
    env = world["env"]
    code, _, err = finish(gate(*START, env={**env, "ABACUS_TOKEN": "abk_nope_nope"}))
    assert code == 2 and "HTTP 401" in err and "Invalid or revoked API key" in err
    code, _, err = finish(gate(*START, env={**env, "ABACUS_TOKEN": "not-a-token"}))
    assert code == 2 and "HTTP 401" in err
    code, _, err = finish(gate(*START[:2], "nope", *START[3:], env=env))
    assert code == 2 and "HTTP 400" in err and "flag: No flag 'nope'" in err
    code, _, err = finish(gate(*START, "--steps", "50,10", env=env))
    assert code == 2 and "steps[1].percent" in err
    code, _, err = finish(gate(*START, "--metric", "nope", env=env))
    assert code == 2 and "metrics[0].metric" in err
    # The staging key may not act in production.
    code, _, err = finish(gate(*START, env={**env, "ABACUS_TOKEN": world["staging_key"]}))
    assert code == 2 and "HTTP 403" in err and "staging" in err
    code, _, err = finish(gate("status", "--id", "999999", env=env))
    assert code == 2 and "HTTP 404" in err
    code, _, err = finish(gate("status", "--id", "1", env={**env, "ABACUS_PROJECT": "other"}))
    assert code == 2 and "HTTP 404" in err
    assert not Release.objects.exists()


def test_rollback_command_and_a_second_rollback(world):
    code, out, err = finish(gate(*START, env=world["env"]))
    release_id = out.strip()
    code, out, err = finish(gate("rollback", "--id", release_id, "--reason", "bad deploy",
                                 env=world["env"]))  # fmt: skip
    assert code == 0 and "rolled back" in out and "bad deploy (by key:deploy-bot)" in out, err
    code, out, err = finish(gate("rollback", "--id", release_id, env=world["env"]))
    assert code == 2 and "HTTP 400" in err and "status:" in err


def test_timeout_exits_3(world):
    code, out, err = finish(gate(*START, "--metric", "purchase", env=world["env"]))
    release_id = out.strip()
    started = time.monotonic()
    code, out, err = finish(gate("wait", "--id", release_id, "--timeout", "2", "--poll", "0.5",
                                 env=world["env"]))  # fmt: skip
    assert code == 3, (out, err)
    assert 1.5 < time.monotonic() - started < 15
    assert "timed out after 2 s" in out and f"rollback --id {release_id}" in out
    assert Release.objects.get(pk=release_id).status == ReleaseStatus.RUNNING


def test_start_and_wait_times_out_with_3(world):
    code, out, err = finish(gate(*START, "--wait", "--timeout", "1", "--poll", "0.3",
                                 env=world["env"]))  # fmt: skip
    assert code == 3, (out, err)
    assert "started release" in out and "timed out" in out
