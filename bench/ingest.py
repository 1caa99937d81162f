"""`manage.py benchmark ingest` (PostgreSQL only): events/s through ``POST /api/v1/events``.

gunicorn (several workers), several concurrent clients and batches of 1,000 mixed events,
against a raw ``COPY`` of the same rows into the same tables, from one connection in one
transaction (the practical limit). The two alternate in rounds, so a machine whose load changes
during the run skews both sides alike.

Works in a throwaway project of the configured database (``DATABASE_URL``, or
``--option database_url=...``: then the benchmark re-runs itself in a child process on that
database) and deletes it afterwards. The rate limiter is off in the benchmark's gunicorn.
Options (``--option key=value``): ``events``, ``batch``, ``rounds``, ``workers``, ``clients``,
``attributes`` (1: every exposure carries the unit's attributes, as for dimension breakdowns),
``database_url``.
"""

from __future__ import annotations

import json
import os
import queue
import random
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.management import CommandError
from django.db import connection

from bench.common import (
    bench_project,
    cpu_seconds,
    delete_projects,
    gunicorn,
    in_threads,
    load_average,
    percentile,
    postgres_cpu_matcher,
    rate,
    request,
    table,
)

RESULT_MARKER = "BENCHMARK-RESULT "


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "pgsql://"))


def _same_database(url: str) -> bool:
    import dj_database_url

    wanted = dj_database_url.parse(url)
    current = settings.DATABASES["default"]
    return connection.vendor == "postgresql" and all(
        str(wanted.get(k) or "") == str(current.get(k) or "") for k in ("NAME", "HOST", "PORT")
    )


def run_ingest(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """HTTP ingestion into PostgreSQL against a raw COPY of the same rows into the same tables."""
    options = dict(options)
    url = options.pop("database_url", "") or os.environ.get("DATABASE_URL", "")
    if not _is_postgres(url):
        raise CommandError(
            "benchmark ingest measures PostgreSQL: set DATABASE_URL=postgres://... or pass "
            "--option database_url=postgres://user@host:5432/dbname"
        )
    if not _same_database(url):
        return _in_subprocess(url, quick, options, out)
    sizes = _options(quick, options)
    events_n, batch, workers = sizes["events"], sizes["batch"], sizes["workers"]

    from experiments.services import api_key_create

    project, experiment = bench_project("ingest")
    baseline, _ = bench_project("copy")
    secret = api_key_create(project=project, name="bench", scopes=["ingest"]).secret
    try:
        events = _events(events_n, experiment.key, seed=5, attributes=bool(sizes["attributes"]))
        bodies = [
            json.dumps({"events": events[lo : lo + batch]}).encode()
            for lo in range(0, events_n, batch)
        ]
        body_mb = sum(map(len, bodies)) / 1e6
        out.write(
            f"{events_n:,} events ({sum(e['type'] == 'exposure' for e in events):,} exposures) "
            f"in {len(bodies)} batches of {batch:,} ({body_mb:.1f} MB of JSON), "
            f"{sizes['rounds']} rounds of COPY then HTTP; load {load_average()}"
        )
        with gunicorn(workers) as port:
            _warm_up(port, project, secret, workers)
            copy_s, http_s, accepted, latencies, cpu = _rounds(
                port, secret, baseline, events, bodies, sizes, out
            )
        _check_stored(project, events_n, accepted)
    finally:
        delete_projects(project, baseline)
    return _report(out, quick, sizes, copy_s, http_s, latencies, cpu)


def _options(quick: bool, options: dict[str, str]) -> dict[str, int]:
    """events, batch, workers, clients and rounds from ``--quick`` and ``--option key=value``."""
    return {
        "events": int(options.get("events", 50_000 if quick else 500_000)),
        "batch": int(options.get("batch", 1000)),
        "workers": int(options.get("workers", 3)),
        "clients": int(options.get("clients", 4)),
        "rounds": max(1, int(options.get("rounds", 2 if quick else 5))),
        "attributes": int(options.get("attributes", 0)),
    }


def _rounds(
    port: int,
    secret: str,
    baseline: Any,
    events: list[dict[str, Any]],
    bodies: list[bytes],
    sizes: dict[str, int],
    out: IO[str],
) -> tuple[float, float, int, list[float], dict[str, float]]:
    """COPY then HTTP, round after round, each its share of the events: the same load hits
    both sides. (COPY seconds, HTTP seconds, events accepted, batch latencies, CPU seconds of
    the web processes and of PostgreSQL during the HTTP rounds)."""
    batch, rounds = sizes["batch"], sizes["rounds"]
    copy_s = http_s = 0.0
    accepted = 0
    latencies: list[float] = []
    cpu = {"web": 0.0, "database": 0.0}
    per_round = -(-len(bodies) // rounds)
    for r in range(rounds):
        lo, hi = r * per_round, min(len(bodies), (r + 1) * per_round)
        copy_s += _raw_copy(baseline, events[lo * batch : hi * batch])
        before = _cpu(port)
        seconds, n, lat = _post_batches(port, secret, bodies[lo:hi], sizes["clients"])
        for side, used in _cpu(port).items():
            cpu[side] += used - before[side]
        http_s += seconds
        accepted += n
        latencies += lat
        out.write(
            f"  round {r + 1}/{rounds}: raw COPY {rate(hi * batch, copy_s):,.0f} rows/s, "
            f"HTTP {rate(accepted, http_s):,.0f} events/s (cumulative)"
        )
    return copy_s, http_s, accepted, latencies, cpu


def _cpu(port: int) -> dict[str, float]:
    """CPU seconds so far of the benchmark's gunicorn (master and workers: their command line
    names the port) and of the PostgreSQL processes serving its database (0 when the server is
    on another machine)."""
    database = settings.DATABASES["default"]["NAME"]
    return {
        "web": cpu_seconds(lambda pid, parent, command: f"127.0.0.1:{port}" in command),
        "database": cpu_seconds(postgres_cpu_matcher(database)),
    }


def _check_stored(project: Any, events_n: int, accepted: int) -> None:
    from assignments.models import Exposure, MetricEvent

    stored = (
        Exposure.objects.filter(project=project).count()
        + MetricEvent.objects.filter(project=project).count()
    )
    if stored != events_n or accepted != events_n:
        raise CommandError(f"stored {stored:,} and accepted {accepted:,} of {events_n:,}")


def _report(
    out: IO[str],
    quick: bool,
    sizes: dict[str, int],
    copy_s: float,
    http_s: float,
    latencies: list[float],
    cpu: dict[str, float],
) -> dict[str, Any]:
    """Print the table, the batch latencies and the CPU per event; the result for the JSON."""
    events_n, batch = sizes["events"], sizes["batch"]
    http_rate = rate(events_n, http_s)
    copy_rate = rate(events_n, copy_s)
    p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    out.write("")
    table(
        out,
        [
            ("path", "events/s", "x COPY"),
            ("raw COPY, one connection, one transaction per round", f"{copy_rate:,.0f}", "1.00"),
            (
                f"POST /api/v1/events ({sizes['clients']} clients, {sizes['workers']} workers, "
                f"batches of {batch})",
                f"{http_rate:,.0f}",
                f"{http_rate / copy_rate:.2f}",
            ),
        ],
    )
    out.write(f"per batch of {batch:,}: p50 {p50:.0f} ms, p99 {p99:.0f} ms; load {load_average()}")
    per_event = {side: seconds / events_n for side, seconds in cpu.items()}
    out.write(_cpu_line(per_event))
    return {
        "benchmark": "ingest",
        "quick": quick,
        "load_after": load_average(),
        **sizes,
        "copy_rows_per_second": round(copy_rate),
        "http_events_per_second": round(http_rate),
        "http_vs_copy": round(http_rate / copy_rate, 3),
        "batch_p50_ms": round(p50, 1),
        "batch_p99_ms": round(p99, 1),
        "cpu_us_per_event": {side: round(x * 1e6, 2) for side, x in per_event.items()},
    }


def _cpu_line(per_event: dict[str, float]) -> str:
    """The HTTP rounds' CPU per event, and the events per second one core of each side takes."""
    parts = [
        f"{side} {x * 1e6:.1f} us ({1 / x:,.0f} events/s per core)"
        for side, x in per_event.items()
        if x > 0
    ]
    both = sum(per_event.values())
    if len(parts) == 2:
        parts.append(f"together {1 / both:,.0f} events/s per core")
    return "CPU per event over the HTTP rounds: " + ("; ".join(parts) or "not measured (no /proc)")


def _in_subprocess(url: str, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Run the benchmark in a child process whose settings point at ``url``."""
    code = (
        "import json, sys, django; django.setup()\n"
        "from bench.ingest import run_ingest, RESULT_MARKER\n"
        "class Out:\n"
        "    def write(self, s): print(s, flush=True)\n"
        f"r = run_ingest(quick={quick!r}, options={options!r}, out=Out())\n"
        "print(RESULT_MARKER + json.dumps(r), flush=True)\n"
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=str(settings.BASE_DIR),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    result = None
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
        else:
            out.write(line)
    if process.wait() != 0 or result is None:
        raise CommandError(f"the ingest benchmark against {url} failed")
    return result


def _events(
    count: int, experiment_key: str, seed: int, attributes: bool = False
) -> list[dict[str, Any]]:
    """Mixed traffic: 1 exposure in 5, metric events with values, some with properties, units
    seen several times, timestamps over the last two days in random order; with ``attributes``
    each exposure carries the unit's country, platform and whether it is new."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    run = secrets.token_hex(4)
    units = max(1, count // 4)
    events = []
    for i in range(count):
        unit_number = rng.randrange(units)
        unit = f"user-{unit_number}"
        ts = (now - timedelta(seconds=rng.uniform(60, 2 * 86400))).isoformat()
        if i % 5 == 0:
            exposure = {
                "event_id": f"{run}-{i}",
                "type": "exposure",
                "experiment": experiment_key,
                "variant": "treatment" if unit_number % 2 else "control",
                "unit_id": unit,
                "timestamp": ts,
            }
            if attributes:
                exposure["attributes"] = {
                    "country": _COUNTRIES[unit_number % len(_COUNTRIES)],
                    "platform": ("ios", "android", "web")[unit_number % 3],
                    "new": unit_number % 4 == 0,
                }
            events.append(exposure)
        else:
            event = {
                "event_id": f"{run}-{i}",
                "type": "metric",
                "name": "purchase" if rng.random() < 0.3 else "page_view",
                "unit_id": unit,
                "value": round(rng.lognormvariate(3, 0.5), 2),
                "timestamp": ts,
            }
            if rng.random() < 0.25:
                event["properties"] = {"plan": rng.choice(["free", "pro"]), "items": 3}
            events.append(event)
    return events


_COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "ES", "IT", "CA")


def _raw_copy(project: Any, events: list[dict[str, Any]]) -> float:
    """Seconds to COPY the same rows, as stored, into the same tables (another project, so
    the event ids do not collide)."""
    exposures, metrics = _rows_as_stored(project, events)

    import psycopg

    params = settings.DATABASES["default"]
    with psycopg.connect(
        dbname=params["NAME"],
        user=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        host=params.get("HOST") or None,
        port=params.get("PORT") or None,
    ) as conn:
        started = time.perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(
                "COPY assignments_exposure (project_id, event_id, experiment_id, variant_id, "
                "unit_id, ts, assignment_mismatch, attributes, received_at) FROM STDIN"
            ) as copy:
                for row in exposures:
                    copy.write_row(row)
            with cursor.copy(
                "COPY assignments_metricevent (project_id, event_id, name, unit_id, value, ts, "
                "properties, received_at) FROM STDIN"
            ) as copy:
                for row in metrics:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def _rows_as_stored(
    project: Any, events: list[dict[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(exposure rows, metric event rows) as the tables store them, in the COPY's columns."""
    experiment = project.experiments.get()
    variant_ids = dict(experiment.variants.values_list("key", "pk"))
    now = datetime.now(UTC)
    exposures, metrics = [], []
    for e in events:
        ts = datetime.fromisoformat(e["timestamp"])
        if e["type"] == "exposure":
            attributes = e.get("attributes")
            exposures.append(
                (
                    project.pk,
                    e["event_id"],
                    experiment.pk,
                    variant_ids[e["variant"]],
                    e["unit_id"],
                    ts,
                    False,
                    None if attributes is None else json.dumps(attributes),
                    now,
                )
            )
        else:
            properties = e.get("properties")
            metrics.append(
                (
                    project.pk,
                    e["event_id"],
                    e["name"],
                    e["unit_id"],
                    e["value"],
                    ts,
                    None if properties is None else json.dumps(properties),
                    now,
                )
            )
    return exposures, metrics


def _warm_up(port: int, project: Any, secret: str, workers: int) -> None:
    """A few tiny batches so every worker has imported, connected and cached the specs."""
    from assignments.models import MetricEvent

    for i in range(workers * 3):
        event = {
            "event_id": f"warm-{i}",
            "type": "metric",
            "name": "warm",
            "unit_id": "w",
            "timestamp": datetime.now(UTC).isoformat(),
        }
        request(port, "POST", "/api/v1/events", json.dumps({"events": [event]}).encode(), secret)
    MetricEvent.objects.filter(project=project, name="warm").delete()


def _post_batches(
    port: int, secret: str, bodies: list[bytes], clients: int
) -> tuple[float, int, list[float]]:
    """Post every body from `clients` threads; (seconds, events accepted, latencies)."""
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)

    def post_all(_: int) -> tuple[int, list[float]]:
        accepted, latencies = 0, []
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                return accepted, latencies
            status, data, seconds = request(port, "POST", "/api/v1/events", body, secret)
            if status != 202:
                raise CommandError(f"POST /api/v1/events answered {status}: {data[:300]!r}")
            answer = json.loads(data)
            if answer["rejected"]:
                raise CommandError(f"events rejected: {answer['rejected'][:3]}")
            accepted += answer["accepted"]
            latencies.append(seconds)

    started = time.perf_counter()
    parts = in_threads(clients, post_all)
    seconds = time.perf_counter() - started
    return seconds, sum(n for n, _ in parts), [x for _, lat in parts for x in lat]
