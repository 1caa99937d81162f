"""`manage.py benchmark propagation`: how fast a kill switch reaches SDKs in streaming mode.

Starts the web server as abacus runs it (gunicorn, ``workers`` processes, config/processes.py)
on the configured database (the embedded SQLite default, or PostgreSQL with ``DATABASE_URL``;
a Redis ``CELERY_BROKER_URL`` makes the cache Redis too), connects ``clients`` official
``growthbook`` SDK clients in streaming mode (``GrowthBook(api_host=..., client_key=...,
streaming=True)``, each in its own process: bench/sdk_client.py) to the production client key
of a throwaway project with one boolean flag served on, then flips the flag off and on
``flips`` times through the service (``flags.services.flag_toggle``, as the toggle API and the
UI do) and measures, for each flip, the time from the call until every SDK's
``eval_feature(flag)`` returns the new value. Prints p50 / p99 / max and a pass line against
1 s at p99 (the issue's goal). Options (``--option key=value``): ``clients`` (5), ``flips``
(30; 10 with ``--quick``), ``workers`` (2), ``timeout`` (seconds a flip may take, 10).
"""

from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
import time
from typing import IO, Any

from django.conf import settings
from django.core.management import CommandError
from django.db import connection

from bench.common import delete_projects, gunicorn, load_average, percentile

GOAL_P99_S = 1.0
FLAG = "checkout-kill"


def run_propagation(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Kill-switch propagation to SDKs in streaming mode: p50 / p99 / max over the flips."""
    clients = int(options.get("clients", 5))
    flips = int(options.get("flips", 10 if quick else 30))
    workers = int(options.get("workers", 2))
    timeout = float(options.get("timeout", 10))
    project, flag, environment = _project()
    try:
        with gunicorn(workers) as port, _sdk_clients(port, environment.client_key, clients) as sdks:
            out.write(
                f"{clients} growthbook SDK clients streaming from {workers} gunicorn workers; "
                f"{connection.vendor}; broker {_broker()}; load {load_average()}"
            )
            toggle = _toggler(flag, environment)
            # One unmeasured flip: every stream is connected once every client sees it.
            _flip(toggle, sdks, False, timeout)
            _flip(toggle, sdks, True, timeout)
            latencies = []
            for i in range(flips):
                time.sleep(random.uniform(0.2, 0.6))  # noqa: S311 - off the watcher's beat
                latencies.append(_flip(toggle, sdks, i % 2 == 1, timeout))
    finally:
        delete_projects(project)
    return _report(out, latencies, clients, workers, flips)


def _project() -> tuple[Any, Any, Any]:
    """A throwaway project with one boolean flag, on in production (serving true)."""
    import secrets

    from experiments.models import Environment
    from experiments.services import project_create
    from flags.services import flag_create, flag_toggle

    project = project_create(
        slug=f"bench-propagation-{secrets.token_hex(4)}", name="benchmark propagation"
    )
    flag = flag_create(
        project=project, key=FLAG, name="Checkout kill switch", default_variation="on"
    )
    environment = Environment.objects.get(project=project, production=True)
    flag_toggle(flag=flag, environment=environment, enabled=True)
    return project, flag, environment


def _toggler(flag: Any, environment: Any) -> Any:
    from flags.services import flag_toggle

    def toggle(enabled: bool) -> None:
        flag_toggle(flag=flag, environment=environment, enabled=enabled)

    return toggle


def _broker() -> str:
    url = settings.CELERY_BROKER_URL
    return url.split("://", 1)[0] if "://" in url else url


class _Clients:
    """The SDK processes and the values they report: (client, monotonic time, value)."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs
        self.reports: queue.Queue[tuple[int, float, Any]] = queue.Queue()
        self.values: list[Any] = [None] * len(procs)
        for i, proc in enumerate(procs):
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()

    def _read(self, i: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, at, value = line.split(" ", 2)
            if kind == "value":
                self.reports.put((i, float(at), json.loads(value)))

    def wait_all(self, value: Any, deadline: float) -> dict[int, float]:
        """When each client first reported ``value`` (monotonic), waiting until ``deadline``."""
        seen = {i: time.monotonic() for i, v in enumerate(self.values) if v == value}
        while len(seen) < len(self.procs):
            try:
                i, at, reported = self.reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                missing = sorted(set(range(len(self.procs))) - set(seen))
                raise CommandError(f"SDK clients {missing} never saw {value!r}") from None
            self.values[i] = reported
            if reported == value:
                seen.setdefault(i, at)
        return seen


class _sdk_clients:  # noqa: N801 - used as a context manager, like a function
    def __init__(self, port: int, client_key: str, count: int) -> None:
        self.args = [
            sys.executable,
            "-m",
            "bench.sdk_client",
            "--api-host",
            f"http://127.0.0.1:{port}",
            "--client-key",
            client_key,
            "--feature",
            FLAG,
        ]
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> _Clients:
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    self.args, cwd=str(settings.BASE_DIR), stdout=subprocess.PIPE, text=True
                )
            )
        clients = _Clients(self.procs)
        clients.wait_all(True, time.monotonic() + 60)  # each has loaded the payload
        return clients

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _flip(toggle: Any, sdks: _Clients, enabled: bool, timeout: float) -> float:
    """Toggle the flag and return the seconds until every client evaluates the new value."""
    started = time.monotonic()
    toggle(enabled)
    seen = sdks.wait_all(enabled, started + timeout)
    return max(seen.values()) - started


def _report(
    out: IO[str], latencies: list[float], clients: int, workers: int, flips: int
) -> dict[str, Any]:
    ms = [s * 1000 for s in latencies]
    p50, p99, worst = percentile(ms, 0.5), percentile(ms, 0.99), max(ms)
    out.write(
        f"kill switch to every SDK ({flips} flips): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {worst:.0f} ms"
    )
    verdict = "PASS" if p99 <= GOAL_P99_S * 1000 else "FAIL"
    out.write(f"{verdict}: p99 {p99:.0f} ms against the goal of {GOAL_P99_S * 1000:.0f} ms")
    return {
        "benchmark": "propagation",
        "database": connection.vendor,
        "broker": _broker(),
        "load_after": load_average(),
        "clients": clients,
        "workers": workers,
        "flips": flips,
        "poll_seconds": settings.ABACUS_STREAM_POLL_SECONDS,
        "latency_ms": {"p50": round(p50, 1), "p99": round(p99, 1), "max": round(worst, 1)},
        "all_ms": [round(v, 1) for v in ms],
        "pass": p99 <= GOAL_P99_S * 1000,
    }
