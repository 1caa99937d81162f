"""`manage.py benchmark assign|ingest`: throughput against a baseline measured in the same run.

- ``assign``: the decision ``assignments_get_or_create`` makes (cached specs, numpy bucketing),
  single and bulk, against the official ``growthbook`` SDK evaluating the payload served by
  ``/api/features/<client key>`` for the same experiment and units (the answers must agree);
  then the full sticky path with the database (new units, returning units), and HTTP through
  gunicorn: ``/assign/bulk`` units/s and single ``/assign`` p50/p99.
- ``ingest`` (PostgreSQL only): events/s through ``POST /api/v1/events`` (gunicorn, several
  workers, several concurrent clients, batches of 1,000 mixed events) against a raw ``COPY`` of
  the same rows into the same tables, from one connection in one transaction (the practical
  limit). The two alternate in rounds, so a machine whose load changes during the run skews
  both sides alike.

Each works in a throwaway project of the configured database (``DATABASE_URL``, or
``--option database_url=...`` for ingest) and deletes it afterwards. The rate limiter is off in
the benchmark's gunicorn (``ABACUS_RATE_LIMIT_PER_MINUTE=0``): it measures the app.
Options (``--option key=value``): ``units``, ``requests``, ``events``, ``batch``, ``rounds``,
``workers``, ``clients``, ``database_url``.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from assignments.selectors import features_payload, project_specs
from assignments.services import _decide, assignments_get_or_create

RESULT_MARKER = "BENCHMARK-RESULT "


# --- shared plumbing ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _gunicorn(workers: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """A gunicorn serving this project on a free port, stopped (by its pid) on exit."""
    port = _free_port()
    child_env = {
        **os.environ,
        "ABACUS_RATE_LIMIT_PER_MINUTE": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ABACUS_VAR_DIR": str(settings.VAR_DIR),
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ],
        cwd=str(settings.BASE_DIR),
        env=child_env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise CommandError(f"gunicorn exited with code {process.returncode}")
            try:
                status, _, _ = _request(port, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise CommandError("gunicorn did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _request(
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


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _table(out: IO[str], rows: list[tuple[str, ...]]) -> None:
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


def _bench_project(label: str) -> tuple[Any, Any]:
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


def _delete_projects(*projects: Any) -> None:
    from experiments.models import Experiment, Project

    ids = [p.pk for p in projects]
    Experiment.objects.filter(project_id__in=ids).delete()  # metrics are protected while used
    Project.objects.filter(pk__in=ids).delete()


def _load() -> str:
    """The machine's 1-minute load average and cores: other work skews every rate."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# --- assign -------------------------------------------------------------------------------------


def run_assign(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Assignment throughput: abacus in-process and over HTTP against the growthbook SDK."""
    from growthbook import GrowthBook

    from experiments.services import api_key_create

    units_n = int(options.get("units", 20_000 if quick else 200_000))
    requests_n = int(options.get("requests", 1_000 if quick else 5_000))
    workers = int(options.get("workers", 3))
    clients = int(options.get("clients", 4))
    call_command("migrate", verbosity=0)
    project, experiment = _bench_project("assign")
    secret = api_key_create(project=project, name="bench", scopes=["assign"]).secret
    rng = random.Random(1)
    units = [f"{rng.getrandbits(64):016x}" for _ in range(units_n)]
    try:
        spec = project_specs(project).specs[experiment.key]
        out.write(
            f"{units_n:,} units, experiment {experiment.key} (50/50, hash version 2); "
            f"{connection.vendor}; load {_load()}"
        )

        # The SDK, evaluating the payload the features endpoint serves.
        payload, _ = features_payload(project)
        gb = GrowthBook(attributes={}, features=json.loads(json.dumps(payload))["features"])
        sdk_answers = []
        started = time.perf_counter()
        for unit in units:
            gb.set_attributes({"id": unit})
            result = gb.eval_feature(experiment.key)
            sdk_answers.append(result.experimentResult.key if result.experimentResult else None)
        sdk_s = time.perf_counter() - started
        out.write(f"  growthbook SDK eval_feature: {_rate(units_n, sdk_s):,.0f}/s")

        # The decision assignments_get_or_create makes, without the database.
        pairs = [(u, {}) for u in units]
        started = time.perf_counter()
        bulk_answers: list[str | None] = []
        for lo in range(0, units_n, 1000):
            specs = project_specs(project)  # the per-request cache check, as a request does
            bulk_answers += _decide(specs.specs[experiment.key], pairs[lo : lo + 1000], {})
        bulk_s = time.perf_counter() - started
        single_n = min(units_n, 20_000)
        started = time.perf_counter()
        single_answers = [_decide(spec, [pair], {})[0] for pair in pairs[:single_n]]
        single_s = time.perf_counter() - started
        mismatches = sum(a != b for a, b in zip(bulk_answers, sdk_answers, strict=True))
        mismatches += sum(a != b for a, b in zip(single_answers, sdk_answers, strict=False))
        out.write(f"  abacus decision, bulk: {_rate(units_n, bulk_s):,.0f}/s")

        # The full sticky path: new units are stored, returning units are read back.
        started = time.perf_counter()
        for lo in range(0, units_n, 1000):
            assignments_get_or_create(project=project, units=pairs[lo : lo + 1000])
        store_s = time.perf_counter() - started
        started = time.perf_counter()
        for lo in range(0, units_n, 1000):
            assignments_get_or_create(project=project, units=pairs[lo : lo + 1000])
        sticky_s = time.perf_counter() - started
        out.write(f"  assignments_get_or_create, new units: {_rate(units_n, store_s):,.0f}/s")

        http = _assign_http(project, secret, units_n, requests_n, workers, clients, out)
    finally:
        _delete_projects(project)

    rows = {
        "growthbook SDK eval_feature (local)": (sdk_s, units_n),
        "abacus decision, bulk (1,000 per call)": (bulk_s, units_n),
        "abacus decision, one unit per call": (single_s, single_n),
        "assignments_get_or_create, new units (stores)": (store_s, units_n),
        "assignments_get_or_create, returning units": (sticky_s, units_n),
        "HTTP /assign/bulk, new units": (http["bulk_s"], http["bulk_units"]),
        "HTTP /assign, one new unit per request": (
            http["single"]["new"]["seconds"],
            http["single_n"],
        ),
        "HTTP /assign, one returning unit per request": (
            http["single"]["returning"]["seconds"],
            http["single_n"],
        ),
    }
    sdk_rate = _rate(units_n, sdk_s)
    table = [("path", "units/s", "x SDK")]
    results = {}
    for name, (seconds, count) in rows.items():
        rate = _rate(count, seconds)
        results[name] = {"units": count, "seconds": round(seconds, 4), "per_second": round(rate)}
        table.append((name, f"{rate:,.0f}", f"{rate / sdk_rate:.2f}"))
    out.write("")
    _table(out, table)
    for phase, timed in http["single"].items():
        out.write(
            f"HTTP /assign latency, {phase} units, {http['single_n']:,} requests ({clients} "
            f"clients, {workers} gunicorn workers): p50 {timed['p50_ms']:.1f} ms, "
            f"p99 {timed['p99_ms']:.1f} ms"
        )
    out.write(f"answers differing from the SDK: {mismatches}")
    return {
        "benchmark": "assign",
        "quick": quick,
        "database": connection.vendor,
        "load_after": _load(),
        "units": units_n,
        "rates": results,
        "decision_vs_sdk": round(_rate(units_n, bulk_s) / sdk_rate, 2),
        "single_decision_vs_sdk": round(_rate(single_n, single_s) / sdk_rate, 2),
        "get_or_create_new_vs_sdk": round(_rate(units_n, store_s) / sdk_rate, 2),
        "get_or_create_returning_vs_sdk": round(_rate(units_n, sticky_s) / sdk_rate, 2),
        "http_single_latency_ms": {
            phase: {"p50": round(t["p50_ms"], 2), "p99": round(t["p99_ms"], 2)}
            for phase, t in http["single"].items()
        },
        "mismatches_vs_sdk": mismatches,
        "workers": workers,
        "clients": clients,
    }


def _assign_http(
    project: Any,
    secret: str,
    units_n: int,
    requests_n: int,
    workers: int,
    clients: int,
    out: IO[str],
) -> dict[str, Any]:
    bulk_units = min(units_n, 50_000)
    bodies = [
        json.dumps({"units": [{"unit_id": f"http-{i}"} for i in range(lo, lo + 1000)]}).encode()
        for lo in range(0, bulk_units, 1000)
    ]
    singles = [json.dumps({"unit_id": f"single-{i}"}).encode() for i in range(requests_n)]
    with _gunicorn(workers) as port:
        for i in range(workers * 2):  # warm every worker: imports, spec cache, connection
            _request(
                port, "POST", "/api/v1/assign", json.dumps({"unit_id": f"w{i}"}).encode(), secret
            )
        work: queue.Queue[bytes] = queue.Queue()
        for body in bodies:
            work.put(body)

        def post_all(_: int, path: str = "/api/v1/assign/bulk") -> list[float]:
            latencies = []
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return latencies
                status, data, seconds = _request(port, "POST", path, body, secret)
                if status != 200:
                    raise CommandError(f"POST {path} answered {status}: {data[:300]!r}")
                latencies.append(seconds)

        started = time.perf_counter()
        _in_threads(clients, post_all)
        bulk_s = time.perf_counter() - started
        out.write(f"  HTTP /assign/bulk: {_rate(bulk_units, bulk_s):,.0f} units/s")
        singles_timed = {}
        for phase in ("new", "returning"):  # the same units twice: stored, then read back
            for body in singles:
                work.put(body)
            started = time.perf_counter()
            latencies = [
                x
                for part in _in_threads(clients, lambda i: post_all(i, "/api/v1/assign"))
                for x in part
            ]
            singles_timed[phase] = {
                "seconds": time.perf_counter() - started,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": _percentile(latencies, 0.99) * 1000,
            }
    return {
        "bulk_units": bulk_units,
        "bulk_s": bulk_s,
        "single_n": requests_n,
        "single": singles_timed,
    }


# --- ingest -------------------------------------------------------------------------------------


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
    events_n = int(options.get("events", 50_000 if quick else 500_000))
    batch = int(options.get("batch", 1000))
    workers = int(options.get("workers", 3))
    clients = int(options.get("clients", 4))
    rounds = max(1, int(options.get("rounds", 2 if quick else 5)))
    call_command("migrate", verbosity=0)

    from assignments.models import Exposure, MetricEvent
    from experiments.services import api_key_create

    project, experiment = _bench_project("ingest")
    baseline, _ = _bench_project("copy")
    secret = api_key_create(project=project, name="bench", scopes=["ingest"]).secret
    copy_s = http_s = 0.0
    accepted = 0
    latencies: list[float] = []
    try:
        events = _events(events_n, experiment.key, seed=5)
        bodies = [
            json.dumps({"events": events[lo : lo + batch]}).encode()
            for lo in range(0, events_n, batch)
        ]
        body_mb = sum(map(len, bodies)) / 1e6
        out.write(
            f"{events_n:,} events ({sum(e['type'] == 'exposure' for e in events):,} exposures) "
            f"in {len(bodies)} batches of {batch:,} ({body_mb:.1f} MB of JSON), {rounds} "
            f"rounds of COPY then HTTP; load {_load()}"
        )
        per_round = -(-len(bodies) // rounds)
        with _gunicorn(workers) as port:
            _warm_up(port, project, secret, workers)
            for r in range(rounds):
                lo, hi = r * per_round, min(len(bodies), (r + 1) * per_round)
                # The same load hits both sides: each round copies, then posts, its share.
                copy_s += _raw_copy(baseline, events[lo * batch : hi * batch])
                seconds, n, lat = _post_batches(port, secret, bodies[lo:hi], clients)
                http_s += seconds
                accepted += n
                latencies += lat
                out.write(
                    f"  round {r + 1}/{rounds}: raw COPY {_rate(hi * batch, copy_s):,.0f} rows/s, "
                    f"HTTP {_rate(accepted, http_s):,.0f} events/s (cumulative)"
                )
        stored = (
            Exposure.objects.filter(project=project).count()
            + MetricEvent.objects.filter(project=project).count()
        )
        if stored != events_n or accepted != events_n:
            raise CommandError(f"stored {stored:,} and accepted {accepted:,} of {events_n:,}")
    finally:
        _delete_projects(project, baseline)

    http_rate = _rate(events_n, http_s)
    copy_rate = _rate(events_n, copy_s)
    p50, p99 = statistics.median(latencies) * 1000, _percentile(latencies, 0.99) * 1000
    out.write("")
    _table(
        out,
        [
            ("path", "events/s", "x COPY"),
            ("raw COPY, one connection, one transaction per round", f"{copy_rate:,.0f}", "1.00"),
            (
                f"POST /api/v1/events ({clients} clients, {workers} workers, batches of {batch})",
                f"{http_rate:,.0f}",
                f"{http_rate / copy_rate:.2f}",
            ),
        ],
    )
    out.write(f"per batch of {batch:,}: p50 {p50:.0f} ms, p99 {p99:.0f} ms; load {_load()}")
    return {
        "benchmark": "ingest",
        "quick": quick,
        "load_after": _load(),
        "events": events_n,
        "batch": batch,
        "workers": workers,
        "clients": clients,
        "rounds": rounds,
        "copy_rows_per_second": round(copy_rate),
        "http_events_per_second": round(http_rate),
        "http_vs_copy": round(http_rate / copy_rate, 3),
        "batch_p50_ms": round(p50, 1),
        "batch_p99_ms": round(p99, 1),
    }


def _in_subprocess(url: str, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Run the benchmark in a child process whose settings point at ``url``."""
    code = (
        "import json, sys, django; django.setup()\n"
        "from assignments.benchmarks import run_ingest, RESULT_MARKER\n"
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


def _events(count: int, experiment_key: str, seed: int) -> list[dict[str, Any]]:
    """Mixed traffic: 1 exposure in 5, metric events with values, some with properties, units
    seen several times, timestamps over the last two days in random order."""
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
            events.append(
                {
                    "event_id": f"{run}-{i}",
                    "type": "exposure",
                    "experiment": experiment_key,
                    "variant": "treatment" if unit_number % 2 else "control",
                    "unit_id": unit,
                    "timestamp": ts,
                }
            )
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


def _raw_copy(project: Any, events: list[dict[str, Any]]) -> float:
    """Seconds to COPY the same rows, as stored, into the same tables (another project, so
    the event ids do not collide)."""
    experiment = project.experiments.get()
    variant_ids = dict(experiment.variants.values_list("key", "pk"))
    now = datetime.now(UTC)
    exposures, metrics = [], []
    for e in events:
        ts = datetime.fromisoformat(e["timestamp"])
        if e["type"] == "exposure":
            exposures.append(
                (
                    project.pk,
                    e["event_id"],
                    experiment.pk,
                    variant_ids[e["variant"]],
                    e["unit_id"],
                    ts,
                    False,
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
                "unit_id, ts, assignment_mismatch, received_at) FROM STDIN"
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
        _request(port, "POST", "/api/v1/events", json.dumps({"events": [event]}).encode(), secret)
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
            status, data, seconds = _request(port, "POST", "/api/v1/events", body, secret)
            if status != 202:
                raise CommandError(f"POST /api/v1/events answered {status}: {data[:300]!r}")
            answer = json.loads(data)
            if answer["rejected"]:
                raise CommandError(f"events rejected: {answer['rejected'][:3]}")
            accepted += answer["accepted"]
            latencies.append(seconds)

    started = time.perf_counter()
    parts = _in_threads(clients, post_all)
    seconds = time.perf_counter() - started
    return seconds, sum(n for n, _ in parts), [x for _, lat in parts for x in lat]
