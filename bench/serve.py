"""`manage.py benchmark serve`: the serving path for returning units through gunicorn as
production runs it, against a trivial JSON view in the same server and the same run.

gunicorn is started from ``config.processes.web`` (gthread workers of 32 threads, the access
log on, as ``make run`` and deployments start it) with the rate limiter on (its limit raised so
that it counts every request but refuses none). Three paths, each for the same time with the
same number of client connections (HTTP/1.1 keep-alive, as services and load balancers
connect), in alternating rounds so a change of the machine's load affects them alike:

- **baseline** ``GET /healthz``: a JSON view through the whole middleware stack that touches
  nothing (the trivial view; it exists in production for load balancers);
- ``POST /api/v1/assign`` for one returning unit (a random unit among those assigned
  beforehand): API key, rate limit, specs, the stored assignment;
- ``POST /api/v1/evaluate`` for one returning unit: API key, rate limit, the environment's flags
  (bench/evaluate.py's 20 flags of every rule kind; every one evaluated, or the first
  ``flags=N`` of them), the usage counts.

Printed per path: requests/s and its ratio to the baseline's, p50 / p99 latency seen by the
clients, and the server's CPU time per request (user + system time of the gunicorn processes,
read from /proc; the database and Redis run in their own processes and are not counted):
requests per second of one core = 1 / CPU seconds per request. Options (``--option key=value``):
``seconds`` per path and round (default 4; 2 with ``--quick``), ``rounds`` (6; 3), ``clients``
(8), ``workers`` (gunicorn processes: the machine's cores), ``units`` (returning units, 5,000),
``flags`` (flags asked for per ``/evaluate``; default every served flag).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import threading
import time
from typing import IO, Any

from django.conf import settings
from django.core.management import CommandError
from django.db import connection

from bench.common import (
    bench_project,
    cpu_seconds,
    delete_projects,
    free_port,
    load_average,
    percentile,
    request,
    table,
    wait_until_healthy,
)
from bench.evaluate import _bench_flags, _units
from config import processes
from flags.selectors import environment_flags

PATHS = ("baseline /healthz", "/api/v1/assign", "/api/v1/evaluate")


def run_serve(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Returning units' /assign and /evaluate against /healthz, same server, same run."""
    from experiments.services import api_key_create

    seconds = float(options.get("seconds", 2 if quick else 4))
    rounds = int(options.get("rounds", 3 if quick else 6))
    clients = int(options.get("clients", 8))
    workers = int(options.get("workers", os.cpu_count() or 2))
    units_n = int(options.get("units", 5_000))
    flags_n = int(options.get("flags", 0))
    load_before = load_average()
    project, experiment = bench_project("serve")
    secret = api_key_create(project=project, name="bench", scopes=["assign", "evaluate"]).secret
    try:
        environment = _bench_flags(project)
        keys = sorted(environment_flags(environment).specs)[:flags_n] if flags_n else None
        units = _units(units_n, random.Random(7))
        cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
        out.write(
            f"{connection.vendor}, cache {cache}; gunicorn {workers} workers x 32 threads; "
            f"{clients} keep-alive clients; {rounds} rounds of {seconds:g} s per path; "
            f"/evaluate asks for {f'{len(keys)} flags' if keys else 'every flag'}; "
            f"load {load_average()}"
        )
        with _server(workers) as (port, master):
            _assign_all(port, secret, units)
            bodies = _bodies(units, keys)
            timings = _measure(port, master, secret, bodies, seconds, rounds, clients, out)
    finally:
        delete_projects(project)
    result = _report(out, timings, quick=quick, workers=workers, clients=clients)
    return {**result, "load_before": load_before, "evaluate_flags": len(keys) if keys else "all"}


class _server:
    """gunicorn as production starts it, on a free port; stopped (by its pid) on exit."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def __enter__(self) -> tuple[int, int]:
        import subprocess

        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ABACUS_VAR_DIR": str(settings.VAR_DIR),
            # Counted on every request, never refused: the limiter's cost is part of the path.
            "ABACUS_RATE_LIMIT_PER_MINUTE": str(10**9),
        }
        argv = processes.web(bind=f"127.0.0.1:{port}", workers=self.workers)
        self.process = subprocess.Popen(
            argv,
            cwd=str(settings.BASE_DIR),
            env=env,
            stdout=subprocess.DEVNULL,  # the access log: written, as in production, not kept
            stderr=open(settings.VAR_DIR / "bench-serve-gunicorn.log", "w"),  # noqa: SIM115
        )
        wait_until_healthy(self.process, port)
        return port, self.process.pid

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - stop it whatever went wrong
            self.process.kill()
            self.process.wait()


def _assign_all(port: int, secret: str, units: list[dict]) -> None:
    """Assign every unit once (stored), in bulk: they are returning units from then on."""
    for lo in range(0, len(units), 1000):
        body = {"units": [{"unit_id": u["id"], "attributes": u} for u in units[lo : lo + 1000]]}
        status, data, _ = request(
            port, "POST", "/api/v1/assign/bulk", json.dumps(body).encode(), secret
        )
        if status != 200:
            raise CommandError(f"/assign/bulk answered {status}: {data[:300]!r}")


def _bodies(units: list[dict], keys: list[str] | None) -> dict[str, list[bytes]]:
    """The same returning units for both paths (``/evaluate`` asks for ``keys``, or all)."""
    assign = [json.dumps({"unit_id": u["id"], "attributes": u}).encode() for u in units]
    flags = {"flags": keys} if keys else {}
    evaluate = [json.dumps({"unit_id": u["id"], "attributes": u, **flags}).encode() for u in units]
    return {"/api/v1/assign": assign, "/api/v1/evaluate": evaluate}


def _server_cpu(master: int) -> float:
    """User + system CPU time of gunicorn's master and workers so far."""
    return cpu_seconds(lambda pid, parent, command: master in (pid, parent))


def _client(
    port: int,
    secret: str,
    path: str,
    bodies: list[bytes] | None,
    until: float,
    seed: int,
    latencies: list[float],
    errors: list[str],
) -> None:
    """One keep-alive connection sending requests back to back until ``until``."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            if bodies is None:
                conn.request("GET", "/healthz")
            else:
                conn.request("POST", path, body=rng.choice(bodies), headers=headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                errors.append(f"{path} answered {response.status}: {data[:300]!r}")
                return
    finally:
        conn.close()


def _measure(
    port: int,
    master: int,
    secret: str,
    bodies: dict[str, list[bytes]],
    seconds: float,
    rounds: int,
    clients: int,
    out: IO[str],
) -> dict[str, dict[str, Any]]:
    timings: dict[str, dict[str, Any]] = {
        p: {"requests": 0, "seconds": 0.0, "cpu": 0.0, "latencies": []} for p in PATHS
    }
    # Warm every worker and thread: imports, caches, connections (not measured).
    for path in PATHS:
        _run_phase(port, secret, path, bodies.get(path), 1.0, clients * 2, [], [])
    for round_ in range(rounds):
        for path in PATHS:
            latencies: list[float] = []
            errors: list[str] = []
            cpu = _server_cpu(master)
            started = time.perf_counter()
            _run_phase(port, secret, path, bodies.get(path), seconds, clients, latencies, errors)
            elapsed = time.perf_counter() - started
            cpu = _server_cpu(master) - cpu
            if errors:
                raise CommandError(errors[0])
            timing = timings[path]
            timing["requests"] += len(latencies)
            timing["seconds"] += elapsed
            timing["cpu"] += cpu
            timing["latencies"] += latencies
            out.write(
                f"  round {round_ + 1} {path}: {len(latencies) / elapsed:,.0f} requests/s, "
                f"{cpu / max(len(latencies), 1) * 1e6:,.0f} us CPU a request"
            )
    return timings


def _run_phase(
    port: int,
    secret: str,
    path: str,
    bodies: list[bytes] | None,
    seconds: float,
    clients: int,
    latencies: list[float],
    errors: list[str],
) -> None:
    until = time.perf_counter() + seconds
    threads = [
        threading.Thread(
            target=_client, args=(port, secret, path, bodies, until, i, latencies, errors)
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _report(
    out: IO[str], timings: dict[str, dict[str, Any]], *, quick: bool, workers: int, clients: int
) -> dict[str, Any]:
    baseline = timings[PATHS[0]]
    base_rate = baseline["requests"] / baseline["seconds"]
    base_cpu = baseline["cpu"] / baseline["requests"]
    rows = [("path", "requests/s", "x baseline", "p50 ms", "p99 ms", "CPU us/req", "req/s/core")]
    paths = {}
    for path, t in timings.items():
        per_second = t["requests"] / t["seconds"]
        cpu = t["cpu"] / t["requests"]
        p50 = statistics.median(t["latencies"]) * 1000
        p99 = percentile(t["latencies"], 0.99) * 1000
        rows.append(
            (
                path,
                f"{per_second:,.0f}",
                f"{per_second / base_rate:.2f}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{cpu * 1e6:,.0f}",
                f"{1 / cpu:,.0f}" if cpu > 0 else "-",
            )
        )
        paths[path] = {
            "requests": t["requests"],
            "per_second": round(per_second),
            "vs_baseline": round(per_second / base_rate, 3),
            "cpu_vs_baseline": round(base_cpu / cpu, 3) if cpu > 0 else None,
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "cpu_us_per_request": round(cpu * 1e6),
            "per_core_per_second": round(1 / cpu) if cpu > 0 else None,
        }
    out.write("")
    table(out, rows)
    out.write(
        "x baseline: requests/s against GET /healthz in the same run; req/s/core: 1 / the "
        f"gunicorn processes' CPU seconds per request; load {load_average()}"
    )
    return {
        "benchmark": "serve",
        "quick": quick,
        "database": connection.vendor,
        "cache": settings.CACHES["default"]["BACKEND"],
        "load_after": load_average(),
        "workers": workers,
        "clients": clients,
        "paths": paths,
    }
