"""Real processes for fault and load tests: gunicorn, Celery worker and beat, a private Redis.

The command lines are the product's own (config/processes.py); this module supervises them.

Each process starts in its own session (process group) so a test can SIGKILL it with all its
children, like a crashed machine, and start it again on the same port.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

from config import processes, queues

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The URL of the database the tests run on (the test database), for subprocesses."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = f"{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{s['NAME']}"


def base_env(var: Path, *, broker: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a subprocess on the test database with a private broker queue."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "ABACUS_VAR_DIR": str(var),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }
    if broker is not None:
        env["CELERY_BROKER_URL"] = broker
    elif not env.get("CELERY_BROKER_URL", "").startswith("redis://"):
        env["CELERY_BROKER_URL"] = "filesystem://"
    if not env["CELERY_BROKER_URL"].startswith("redis") and not (
        env.get("ABACUS_CACHE_URL") or env.get("REDIS_URL")
    ):
        # This process's file cache, not one under `var`: the serving generation must be shared
        # for a change made here to reach the server's caches at once (docs/operations.md 19).
        location = settings.CACHES["default"].get("LOCATION", "")
        if settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache") and location:
            env["ABACUS_CACHE_URL"] = f"file://{location}"
    # Private queues (fault-xxxx.analysis, ...), so no other worker on a shared broker takes
    # these tasks; a worker without -Q consumes all of them.
    env["ABACUS_TASK_QUEUE"] = f"fault-{uuid.uuid4().hex[:8]}"
    env.update(extra)
    return env


class Proc:
    """A subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        with open(self.log, "a") as out:
            out.write(f"\n=== start {self.name} at {time.strftime('%X')}\n")
        self.popen = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=open(self.log, "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown handlers, no acknowledgements, like a crash."""
        if self.popen is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            self.kill()
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)
        self.kill()

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]


def gunicorn(
    env: dict, port: int, log: Path, workers: int = 2, threads: int = 1, access_log: bool = True
) -> Proc:
    args = processes.web(
        bind=f"127.0.0.1:{port}", workers=workers, threads=threads, access_log=access_log
    )
    return Proc("web", args, env, log)


def celery_worker(
    env: dict,
    log: Path,
    name: str,
    pool: str = "solo",
    module: str | None = None,
    roles: tuple[str, ...] = (),
) -> Proc:
    """A worker of the private queues (all of them, or the given roles: config/queues.py);
    `module` runs a wrapper (e.g. tests.fault.paused_worker) instead of celery."""
    prefix = env["ABACUS_TASK_QUEUE"]
    args = processes.worker(
        name=f"{name}-{uuid.uuid4().hex[:6]}@%h",
        pool=pool,
        concurrency=1 if pool == "prefork" else None,
        queues=[queues.queue_name(role, prefix) for role in roles],
        module=module or "celery",
    )
    return Proc(name, args, env, log)


def celery_beat(env: dict, log: Path, var: Path) -> Proc:
    return Proc("beat", processes.beat(schedule=var / "celerybeat-schedule"), env, log)


class RedisServer:
    """A throwaway redis-server on a free port; the shared one is never touched."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: Proc | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = Proc("redis", args, dict(os.environ), self.log).start()
        wait_for(lambda: _tcp_open(self.port), 15, f"redis on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    """Poll until `condition()` is truthy; return its value or fail saying what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_healthy(base: str, log: Path, timeout: float = 60) -> None:
    try:
        wait_for(lambda: requests.get(base + "/healthz", timeout=2).ok, timeout, "/healthz")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None


def wait_log(log: Path, text: str, timeout: float) -> None:
    try:
        wait_for(lambda: text in log.read_text(), timeout, f"{text!r} in {log.name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-4000:]}") from None
