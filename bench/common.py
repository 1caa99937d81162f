"""What the benchmarks share: a gunicorn of their own, requests, threads, tables, a throwaway
project, and the machine's load (other work on the machine skews every rate)."""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from django.conf import settings
from django.core.management import CommandError

from config import processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(workers: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """A gunicorn serving this project on a free port, stopped (by its pid) on exit."""
    port = free_port()
    child_env = {
        **os.environ,
        "ABACUS_RATE_LIMIT_PER_MINUTE": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ABACUS_VAR_DIR": str(settings.VAR_DIR),
        **(env or {}),
    }
    process = subprocess.Popen(
        processes.web(
            bind=f"127.0.0.1:{port}",
            workers=workers,
            timeout=120,
            access_log=False,
            log_level="warning",
        ),
        cwd=str(settings.BASE_DIR),
        env=child_env,
    )
    try:
        wait_until_healthy(process, port)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(process: subprocess.Popen, port: int, seconds: float = 60) -> None:
    """Wait for a starting gunicorn to answer ``/healthz``; CommandError if it exits or stays
    silent for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise CommandError(f"gunicorn exited with code {process.returncode}")
        try:
            status, _, _ = request(port, "GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CommandError(f"gunicorn did not answer /healthz within {seconds:g} s")
        time.sleep(0.2)


def request(
    port: int, method: str, path: str, body: bytes | None = None, secret: str | None = None
) -> tuple[int, bytes, float]:
    """One request on a fresh connection (gunicorn's sync workers close after each answer)."""
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started
    finally:
        conn.close()


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(out: IO[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out.write("  ".join("-" * w for w in widths))


def bench_project(label: str) -> tuple[Any, Any]:
    """A throwaway project with one metric and one running 50/50 experiment."""
    from experiments.services import (
        experiment_create,
        experiment_start,
        metric_create,
        project_create,
    )

    slug = f"bench-{label}-{secrets.token_hex(4)}"
    project = project_create(slug=slug, name=f"benchmark {label}")
    metric_create(
        project=project, key="purchase", name="Purchase", kind="binomial", event_name="purchase"
    )
    experiment = experiment_create(
        project=project,
        key="checkout-v2",
        name="Checkout v2",
        seed="bench-seed",
        variants=[
            {"key": "control", "weight": 0.5, "is_control": True, "value": {"layout": "old"}},
            {"key": "treatment", "weight": 0.5, "value": {"layout": "new"}},
        ],
        metrics=[{"metric": "purchase", "role": "primary"}],
    )
    return project, experiment_start(experiment=experiment)


def delete_projects(*projects: Any) -> None:
    from experiments.models import Experiment, Project

    ids = [p.pk for p in projects]
    Experiment.objects.filter(project_id__in=ids).delete()  # metrics are protected while used
    Project.objects.filter(pk__in=ids).delete()


def load_average() -> str:
    """The machine's 1-minute load average and cores: other work skews every rate."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def rates_table(
    out: IO[str],
    rows: dict[str, tuple[float, int]],
    baseline_rate: float,
    *,
    unit: str,
    baseline: str = "SDK",
    digits: int = 2,
) -> dict[str, dict[str, Any]]:
    """Print rows of (seconds, count) as rates against ``baseline_rate``; return them for the
    JSON result (``{name: {unit: count, "seconds", "per_second"}}``)."""
    lines = [("path", f"{unit}/s", f"x {baseline}")]
    results = {}
    for name, (seconds, count) in rows.items():
        per_second = rate(count, seconds)
        results[name] = {unit: count, "seconds": round(seconds, 4), "per_second": round(per_second)}
        lines.append((name, f"{per_second:,.0f}", f"{per_second / baseline_rate:.{digits}f}"))
    out.write("")
    table(out, lines)
    return results


def cpu_seconds(matches: Callable[[int, int, str], bool]) -> float:
    """User + system CPU seconds so far of the processes for which ``matches(pid, parent pid,
    command line)`` holds (read from /proc). A PostgreSQL backend's command line is its process
    title: ``postgres: <cluster>: <user> <database> <client> <state>``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if matches(int(entry), int(fields[1]), command):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_busy_seconds() -> float | None:
    """The CPU time every core of the machine has spent busy since boot (Linux /proc/stat, in
    clock ticks of 10 ms); None where there is no /proc/stat. Across a measurement on an
    otherwise idle machine, what it cost every process together, including processes that
    ended during it (``cpu_seconds`` only sees those still running at the end: an incremental
    snapshot's shard connections have closed, and their backends exited, by then)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# PostgreSQL's own processes that every writer's work passes through (WAL, checkpoints).
_POSTGRES_SHARED = ("walwriter", "checkpointer", "background writer", "walsender")


def postgres_cpu_matcher(database: str) -> Callable[[int, int, str], bool]:
    """Backends connected to ``database``, plus the WAL writer, checkpointer and background
    writer (shared with any other database's writers on the same server)."""

    def matches(pid: int, parent: int, command: str) -> bool:
        return command.startswith("postgres:") and (
            f" {database} " in command or any(name in command for name in _POSTGRES_SHARED)
        )

    return matches
