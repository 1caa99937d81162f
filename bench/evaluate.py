"""`manage.py benchmark evaluate`: server-side flag evaluation against the growthbook SDK.

A throwaway project with 20 flags of every rule kind in production (force rules on conditions
and on a segment, rollouts, an experiment rule, prerequisites, off flags, a default-only flag;
boolean, string, number and JSON values). The baseline is the official ``growthbook`` SDK
evaluating, in-process, the payload ``/api/features/<client key>`` serves (``set_attributes``
and ``eval_feature`` for each flag): flag evaluations per second. Against it:

- the pure decision (`bucketing.flags.evaluate_flags` over the cached specs), checked to serve
  every unit exactly what the SDK serves;
- the service ``flags_evaluate`` (cache check, decision, counts into the process's usage
  buffer), untracked and tracked (one flag exposure per flag stored);
- HTTP ``POST /api/v1/evaluate`` through gunicorn (rate limiter off): every flag for one unit
  per request, untracked and tracked, with p50 / p99 latency.

Then the evaluation counts: the in-process ones flushed (``flag_usage_flush``, timed), the
gunicorn workers' written when they stop; every evaluation made must be counted.

Options (``--option key=value``): ``units`` (in-process), ``requests`` (HTTP, per phase),
``workers`` (gunicorn), ``clients`` (threads).
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

COUNTRIES = ["US", "CA", "DE", "FR", "BR", None]
PLANS = ["free", "pro", "team"]
VERSIONS = ["1.9.9", "2.0.0", "2.10.1", "3.1.0"]


def run_evaluate(*, quick: bool, options: dict[str, str], out: IO[str]) -> dict[str, Any]:
    """Flag evaluations per second: abacus in-process and over HTTP against the growthbook SDK."""
    from experiments.services import api_key_create

    units_n = int(options.get("units", 2_000 if quick else 20_000))
    requests_n = int(options.get("requests", 400 if quick else 3_000))
    workers = int(options.get("workers", 3))
    clients = int(options.get("clients", 4))
    project, _ = bench_project("evaluate")
    secret = api_key_create(project=project, name="bench", scopes=["evaluate"]).secret
    try:
        environment = _bench_flags(project)
        units = _units(units_n, random.Random(1))
        out.write(f"{units_n:,} units x 20 flags; {connection.vendor}; load {load_average()}")
        sdk_answers, sdk_s = _sdk_eval(environment, units)
        flags_n = len(sdk_answers[0])
        evaluations = units_n * flags_n
        out.write(f"  growthbook SDK eval_feature: {rate(evaluations, sdk_s):,.0f} evaluations/s")
        local = _decisions(environment, units, sdk_answers)
        service = _service(environment, units)
        http = _evaluate_http(secret, units, requests_n, workers, clients, out)
        counted = _counted(environment)
    finally:
        delete_projects(project)

    rows = {
        "growthbook SDK eval_feature (local)": (sdk_s, evaluations),
        "abacus evaluate_flags (pure, cached specs)": (local["seconds"], evaluations),
        "abacus flags_evaluate (+ usage buffer)": (service["untracked"], evaluations),
        "abacus flags_evaluate, tracked (+ exposures)": (service["tracked"], evaluations),
    }
    for phase, timed in http["phases"].items():
        rows[f"HTTP /evaluate, {phase}"] = (timed["seconds"], http["requests"] * flags_n)
    sdk_rate = rate(evaluations, sdk_s)
    results = rates_table(out, rows, sdk_rate, unit="evaluations", digits=3)
    for phase, timed in http["phases"].items():
        out.write(
            f"HTTP /evaluate {phase}, {http['requests']:,} requests of {flags_n} flags "
            f"({clients} clients, {workers} gunicorn workers): "
            f"{rate(http['requests'], timed['seconds']):,.0f} requests/s, "
            f"p50 {timed['p50_ms']:.1f} ms, p99 {timed['p99_ms']:.1f} ms"
        )
    expected = (2 * units_n + http["counted_requests"]) * flags_n
    out.write(
        f"usage: {service['buffer_us']:.1f} us a request to buffer its counts; one flush of "
        f"{service['flush_keys']} keys ({2 * evaluations:,} evaluations) "
        f"{service['flush_ms']:.1f} ms; evaluations counted {counted:,} of {expected:,}; "
        f"answers differing from the SDK: {local['mismatches']}"
    )
    return {
        "benchmark": "evaluate",
        "quick": quick,
        "database": connection.vendor,
        "load_after": load_average(),
        "units": units_n,
        "flags": flags_n,
        "rates": results,
        "decision_vs_sdk": round(rate(evaluations, local["seconds"]) / sdk_rate, 2),
        "service_vs_sdk": round(rate(evaluations, service["untracked"]) / sdk_rate, 2),
        "http_vs_sdk": round(
            rate(http["requests"] * flags_n, http["phases"]["untracked"]["seconds"]) / sdk_rate,
            3,
        ),
        "http_latency_ms": {
            phase: {"p50": round(t["p50_ms"], 2), "p99": round(t["p99_ms"], 2)}
            for phase, t in http["phases"].items()
        },
        "usage_buffer_us": round(service["buffer_us"], 2),
        "usage_flush_ms": round(service["flush_ms"], 2),
        "usage_flush_keys": service["flush_keys"],
        "evaluations_counted": counted,
        "evaluations_expected": expected,
        "mismatches_vs_sdk": local["mismatches"],
        "workers": workers,
        "clients": clients,
    }


def _bench_flags(project: Any) -> Any:
    """20 flags in production (the experiment rule serves bench_project's checkout-v2)."""
    from experiments.models import Environment
    from flags.services import flag_create, flag_environment_update, segment_create

    production = Environment.objects.get(project=project, key="production")
    segment_create(
        project=project,
        key="beta",
        name="Beta testers",
        condition={"plan": "pro"},
        include=[f"beta-{i}" for i in range(200)],
        exclude=["beta-0"],
    )

    def flag(key: str, rules: list[dict[str, Any]] | None = None, on: bool = True, **kw: Any):
        created = flag_create(project=project, key=key, name=key, **kw)
        if on or rules:
            flag_environment_update(
                flag=created, environment=production, enabled=on, rules=rules or []
            )

    strings = [{"key": "a", "value": "alpha"}, {"key": "b", "value": "beta"}]
    for i in range(5):
        share = round(0.15 * (i + 1), 2)
        flag(f"rollout-{i}", [{"type": "rollout", "weights": {"on": share, "off": 1 - share}}])
    for i in range(4):
        countries = COUNTRIES[i : i + 2]
        rule = {"type": "force", "condition": {"country": {"$in": countries}}, "variation": "b"}
        flag(f"country-{i}", [rule], type="string", variations=strings, default_variation="a")
    for i in range(3):
        flag(f"segment-{i}", [{"type": "force", "segment": "beta", "variation": "on"}])
    flag(
        "checkout",
        [{"type": "experiment", "experiment": "checkout-v2"}],
        type="json",
        variations=[
            {"key": "control", "value": {"layout": "old"}},
            {"key": "treatment", "value": {"layout": "new"}},
        ],
    )
    for i in range(3):
        prerequisites = [{"flag": f"rollout-{i}", "variations": ["on"]}]
        flag(f"child-{i}", prerequisites=prerequisites, default_variation="on")
    for i in range(2):
        flag(f"off-{i}", on=False)
    numbers = [{"key": "low", "value": 10}, {"key": "high", "value": 50}]
    flag(
        "version-gate",
        [
            {"type": "force", "condition": {"version": {"$vgte": "2.1.0"}}, "variation": "high"},
            {"type": "rollout", "weights": {"low": 0.7, "high": 0.3}},
        ],
        type="number",
        variations=numbers,
    )
    flag("default-only", default_variation="on")
    return Environment.objects.select_related("project").get(pk=production.pk)


def _units(count: int, rng: random.Random) -> list[dict[str, Any]]:
    units = []
    for i in range(count):
        unit_id = f"beta-{i}" if i % 50 == 0 else f"{rng.getrandbits(64):016x}"
        attrs = {"country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS)}
        attrs["version"] = rng.choice(VERSIONS)
        units.append({"id": unit_id, **{k: v for k, v in attrs.items() if v is not None}})
    return units


def _sdk_eval(environment: Any, units: list[dict[str, Any]]) -> tuple[list[dict], float]:
    """The SDK on the payload the features endpoint serves: (values per unit, seconds)."""
    from growthbook import GrowthBook

    from assignments.selectors import features_payload_for
    from flags.selectors import environment_flags

    payload, _ = features_payload_for(environment)
    features = json.loads(json.dumps(payload))["features"]  # as over HTTP
    keys = list(environment_flags(environment).specs)
    gb = GrowthBook(attributes={}, features=features)
    answers = []
    started = time.perf_counter()
    for attrs in units:
        gb.set_attributes(attrs)
        answers.append({key: gb.eval_feature(key).value for key in keys})
    return answers, time.perf_counter() - started


def _decisions(environment: Any, units: list[dict], sdk_answers: list[dict]) -> dict[str, Any]:
    """The pure decision over the cached specs, one unit per call; answers unlike the SDK's."""
    from bucketing.flags import evaluate_flags
    from flags.selectors import environment_flags

    answers = []
    started = time.perf_counter()
    specs = environment_flags(environment).specs
    for attrs in units:
        answers.append(evaluate_flags(specs, attrs))
    seconds = time.perf_counter() - started
    mismatches = 0
    for ours, sdk in zip(answers, sdk_answers, strict=True):
        for key, result in ours.items():
            if json.dumps(result.value, sort_keys=True) != json.dumps(sdk[key], sort_keys=True):
                mismatches += 1
    return {"seconds": seconds, "mismatches": mismatches}


def _service(environment: Any, units: list[dict]) -> dict[str, float]:
    """``flags_evaluate`` one unit per call (a request's work without HTTP): untracked,
    tracked; then one flush of their counts, and the cost of buffering a request's counts."""
    from django.utils import timezone

    from assignments.services.evaluate import flags_evaluate
    from assignments.services.flag_usage import usage_day
    from assignments.services.usage_buffer import UsageBuffer, flag_usage_flush
    from flags.selectors import environment_flags

    timed: dict[str, float] = {}
    flag_usage_flush()  # nothing of earlier work in the timed flush
    for phase, track in (("untracked", False), ("tracked", True)):
        started = time.perf_counter()
        for attrs in units:
            flags_evaluate(
                environment=environment, unit_id=attrs["id"], attributes=attrs, track=track
            )
        timed[phase] = time.perf_counter() - started
    started = time.perf_counter()
    timed["flush_keys"] = flag_usage_flush()
    timed["flush_ms"] = (time.perf_counter() - started) * 1000
    served = environment_flags(environment)
    now = timezone.now()
    counts = {(pk, "on", usage_day(now)): (1, now) for pk in served.flag_ids.values()}
    scratch = UsageBuffer()  # never flushed: only the in-memory cost
    scratch.background = False
    rounds = min(len(units), 10_000)
    started = time.perf_counter()
    for _ in range(rounds):
        scratch.add(environment.pk, counts)
    timed["buffer_us"] = (time.perf_counter() - started) / rounds * 1e6
    return timed


def _counted(environment: Any) -> int:
    """The evaluations counted in the environment's usage rows (this process's flushed)."""
    from django.db.models import Sum

    from assignments.services.usage_buffer import flag_usage_flush
    from flags.models import FlagUsage

    flag_usage_flush()
    return FlagUsage.objects.filter(environment=environment).aggregate(n=Sum("count"))["n"] or 0


def _evaluate_http(
    secret: str, units: list[dict], requests_n: int, workers: int, clients: int, out: IO[str]
) -> dict[str, Any]:
    """Every flag for one unit per request; untracked, then tracked (new units)."""
    chosen = [units[i % len(units)] for i in range(requests_n)]
    bodies = {
        phase: [
            json.dumps(
                {"unit_id": f"{phase}-{i}-{u['id']}", "attributes": u, "track": track}
            ).encode()
            for i, u in enumerate(chosen)
        ]
        for phase, track in (("untracked", False), ("tracked", True))
    }
    phases = {}
    with gunicorn(workers) as port:
        for i in range(workers * 2):  # warm every worker: imports, spec cache, connection
            body = json.dumps({"unit_id": f"w{i}"}).encode()
            request(port, "POST", "/api/v1/evaluate", body, secret)
        for phase, phase_bodies in bodies.items():
            phases[phase] = _post_phase(port, secret, phase_bodies, clients)
            out.write(
                f"  HTTP /evaluate {phase}: "
                f"{rate(requests_n, phases[phase]['seconds']):,.0f} requests/s"
            )
    # gunicorn has stopped: its workers wrote their buffered counts as they exited.
    return {
        "requests": requests_n,
        "phases": phases,
        "counted_requests": 2 * (requests_n + workers),
    }


def _post_phase(port: int, secret: str, bodies: list[bytes], clients: int) -> dict[str, float]:
    """Post every body from ``clients`` threads: seconds, p50 and p99 latency."""
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)

    def post_all(_: int) -> list[float]:
        latencies = []
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                return latencies
            status, data, seconds = request(port, "POST", "/api/v1/evaluate", body, secret)
            if status != 200:
                raise CommandError(f"POST /api/v1/evaluate answered {status}: {data[:300]!r}")
            latencies.append(seconds)

    started = time.perf_counter()
    latencies = [x for part in in_threads(clients, post_all) for x in part]
    return {
        "seconds": time.perf_counter() - started,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }
