"""`manage.py benchmark assign`: assignment throughput against the growthbook SDK.

The decision ``assignments_get_or_create`` makes (cached specs, numpy bucketing), single and bulk,
against the official ``growthbook`` SDK evaluating the payload served by
``/api/features/<client key>`` for the same experiment and units (the answers must agree); then
the full sticky path with the database (new units, returning units), and HTTP through gunicorn:
``/assign/bulk`` units/s and single ``/assign`` p50/p99.

Works in a throwaway project of the configured database (SQLite or PostgreSQL) and deletes it
afterwards. The rate limiter is off in the benchmark's gunicorn: it measures the app. Options
(``--option key=value``): ``units``, ``requests``, ``workers``, ``clients``.
"""

from __future__ import annotations

import json
import queue
import random
import statistics
import time
from typing import IO, Any

from django.core.management import CommandError
from django.db import connection

from assignments.selectors import features_payload, project_specs
from assignments.services import assignments_get_or_create
from bench.common import (
    bench_project,
    delete_projects,
    gunicorn,
    in_threads,
    load_average,
    percentile,
    rate,
    rates_table,
    request,
)
from bucketing.payload import evaluate, evaluate_many


def run_assign(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Assignment throughput: abacus in-process and over HTTP against the growthbook SDK."""
    from experiments.services import api_key_create

    units_n, requests_n, workers, clients = _options(quick, options)
    project, experiment = bench_project("assign")
    secret = api_key_create(project=project, name="bench", scopes=["assign"]).secret
    rng = random.Random(1)
    units = [f"{rng.getrandbits(64):016x}" for _ in range(units_n)]
    try:
        spec = project_specs(project).specs[experiment.key]
        out.write(
            f"{units_n:,} units, experiment {experiment.key} (50/50, hash version 2); "
            f"{connection.vendor}; load {load_average()}"
        )
        sdk_answers, sdk_s = _sdk_eval(project, experiment.key, units)
        out.write(f"  growthbook SDK eval_feature: {rate(units_n, sdk_s):,.0f}/s")
        local = _decisions(project, experiment.key, spec, units, sdk_answers)
        out.write(f"  abacus decision, bulk: {rate(units_n, local['bulk_s']):,.0f}/s")
        store_s, sticky_s = _get_or_create(project, units)
        out.write(f"  assignments_get_or_create, new units: {rate(units_n, store_s):,.0f}/s")
        http = _assign_http(project, secret, units_n, requests_n, workers, clients, out)
    finally:
        delete_projects(project)

    rows = _timings(units_n, sdk_s, local, store_s, sticky_s, http)
    sdk_rate = rate(units_n, sdk_s)
    results = rates_table(out, rows, sdk_rate, unit="units", digits=2)
    _write_latencies(out, http, workers, clients)
    out.write(f"answers differing from the SDK: {local['mismatches']}")
    return {
        "benchmark": "assign",
        "quick": quick,
        "database": connection.vendor,
        "load_after": load_average(),
        "units": units_n,
        "rates": results,
        "decision_vs_sdk": round(rate(units_n, local["bulk_s"]) / sdk_rate, 2),
        "single_decision_vs_sdk": round(rate(local["single_n"], local["single_s"]) / sdk_rate, 2),
        "get_or_create_new_vs_sdk": round(rate(units_n, store_s) / sdk_rate, 2),
        "get_or_create_returning_vs_sdk": round(rate(units_n, sticky_s) / sdk_rate, 2),
        "http_single_latency_ms": {
            phase: {"p50": round(t["p50_ms"], 2), "p99": round(t["p99_ms"], 2)}
            for phase, t in http["single"].items()
        },
        "mismatches_vs_sdk": local["mismatches"],
        "workers": workers,
        "clients": clients,
    }


def _options(quick: bool, options: dict[str, str]) -> tuple[int, int, int, int]:
    """(units, requests, workers, clients) from ``--quick`` and ``--option key=value``."""
    units_n = int(options.get("units", 20_000 if quick else 200_000))
    requests_n = int(options.get("requests", 1_000 if quick else 5_000))
    workers = int(options.get("workers", 3))
    clients = int(options.get("clients", 4))
    return units_n, requests_n, workers, clients


def _sdk_eval(project: Any, key: str, units: list[str]) -> tuple[list[str | None], float]:
    """The SDK, evaluating the payload the features endpoint serves: (answers, seconds)."""
    from growthbook import GrowthBook

    payload, _ = features_payload(project)
    gb = GrowthBook(attributes={}, features=json.loads(json.dumps(payload))["features"])
    sdk_answers = []
    started = time.perf_counter()
    for unit in units:
        gb.set_attributes({"id": unit})
        result = gb.eval_feature(key)
        sdk_answers.append(result.experimentResult.key if result.experimentResult else None)
    return sdk_answers, time.perf_counter() - started


def _decisions(
    project: Any, key: str, spec: Any, units: list[str], sdk_answers: list[str | None]
) -> dict[str, Any]:
    """The decision assignments_get_or_create makes for a unit with no stored assignment,
    without the database: the cached specs, then bucketing.payload' bucketing (numpy from 256
    units on, one by one below that). Bulk and single timings, and answers unlike the SDK's."""
    units_n = len(units)
    attribute = spec.hash_attribute
    started = time.perf_counter()
    bulk_answers: list[str | None] = []
    for lo in range(0, units_n, 1000):
        specs = project_specs(project)  # the per-request cache check, as a request does
        chunk = [{attribute: u} for u in units[lo : lo + 1000]]
        bulk_answers += evaluate_many(specs.specs[key], chunk)
    bulk_s = time.perf_counter() - started
    single_n = min(units_n, 20_000)
    started = time.perf_counter()
    single_answers = [evaluate(spec, {attribute: u}) for u in units[:single_n]]
    single_s = time.perf_counter() - started
    mismatches = sum(a != b for a, b in zip(bulk_answers, sdk_answers, strict=True))
    mismatches += sum(a != b for a, b in zip(single_answers, sdk_answers, strict=False))
    return {"bulk_s": bulk_s, "single_s": single_s, "single_n": single_n, "mismatches": mismatches}


def _get_or_create(project: Any, units: list[str]) -> tuple[float, float]:
    """The full sticky path: new units are stored, returning units are read back (seconds)."""
    pairs = [(u, {}) for u in units]
    started = time.perf_counter()
    for lo in range(0, len(units), 1000):
        assignments_get_or_create(project=project, units=pairs[lo : lo + 1000])
    store_s = time.perf_counter() - started
    started = time.perf_counter()
    for lo in range(0, len(units), 1000):
        assignments_get_or_create(project=project, units=pairs[lo : lo + 1000])
    return store_s, time.perf_counter() - started


def _timings(
    units_n: int,
    sdk_s: float,
    local: dict[str, Any],
    store_s: float,
    sticky_s: float,
    http: dict[str, Any],
) -> dict[str, tuple[float, int]]:
    """Each path of the table: (seconds, units)."""
    return {
        "growthbook SDK eval_feature (local)": (sdk_s, units_n),
        "abacus decision, bulk (1,000 per call)": (local["bulk_s"], units_n),
        "abacus decision, one unit per call": (local["single_s"], local["single_n"]),
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


def _write_latencies(out: IO[str], http: dict[str, Any], workers: int, clients: int) -> None:
    for phase, timed in http["single"].items():
        out.write(
            f"HTTP /assign latency, {phase} units, {http['single_n']:,} requests ({clients} "
            f"clients, {workers} gunicorn workers): p50 {timed['p50_ms']:.1f} ms, "
            f"p99 {timed['p99_ms']:.1f} ms"
        )


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
    with gunicorn(workers) as port:
        for i in range(workers * 2):  # warm every worker: imports, spec cache, connection
            request(
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
                status, data, seconds = request(port, "POST", path, body, secret)
                if status != 200:
                    raise CommandError(f"POST {path} answered {status}: {data[:300]!r}")
                latencies.append(seconds)

        started = time.perf_counter()
        in_threads(clients, post_all)
        bulk_s = time.perf_counter() - started
        out.write(f"  HTTP /assign/bulk: {rate(bulk_units, bulk_s):,.0f} units/s")
        singles_timed = {}
        for phase in ("new", "returning"):  # the same units twice: stored, then read back
            for body in singles:
                work.put(body)
            started = time.perf_counter()
            latencies = [
                x
                for part in in_threads(clients, lambda i: post_all(i, "/api/v1/assign"))
                for x in part
            ]
            singles_timed[phase] = {
                "seconds": time.perf_counter() - started,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
            }
    return {
        "bulk_units": bulk_units,
        "bulk_s": bulk_s,
        "single_n": requests_n,
        "single": singles_timed,
    }
