"""Load test: sustained assignment and ingestion traffic against gunicorn, with analyses running.

1. Peak: a closed-loop burst of event batches (4 clients, batches of 1,000, as `manage.py
   benchmark ingest`) measures the events/s this machine ingests right now.
2. Sustained: open-loop traffic for --duration seconds: event batches at --fraction of the peak
   (at least half of it, or of the ingestion benchmark's figure under var/bench/ when that is
   higher), single and bulk assignments at rates in proportion to the peak (the full rates at
   FULL_SIDE_TRAFFIC_PEAK and above), and an analysis queued every 15 s for a Celery worker to
   compute meanwhile.
3. Checks: zero errors, zero lost events (every accepted event is in the database, each once),
   and the achieved ingestion rate at least half the peak.
4. The peak again, after the sustained phase: if the machine itself became slower meanwhile
   (other work on shared cores), the report shows it (``peak_after_events_per_second``), and the
   short form in CI does not hold the rate against a peak the machine no longer had.

Latencies are measured from each request's scheduled start (so a server that falls behind
shows it, with no coordinated omission). Long form (PostgreSQL + Redis, documented in
docs/benchmarks.md):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/abacus_load \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
    .venv/bin/python -m bench.load --duration 300   # or: make loadtest

The short form runs in the test suite as tests/load/test_load.py. The processes are started
with the product's own command lines (config/processes.py, through tests/fault/stack.py).
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

BATCH = 1000
PEAK_CLIENTS = 4
WEB_WORKERS = 3
ASSIGN_RPS = 40.0
BULK_RPS = 2.0
BULK_UNITS = 100
ANALYZE_EVERY = 15.0
# The peak (events/s) at which the side traffic runs at the full ASSIGN_RPS and BULK_RPS: about
# what an otherwise idle 2-core machine ingests. Below it the side traffic shrinks in proportion,
# so a machine busy with other work gets the same mix, lighter, instead of fixed-rate assignments
# that alone saturate it (CI on a shared machine measured a peak of 3,984 events/s; 40 assign/s
# on top of 55% of that queued every request for 20 s).
FULL_SIDE_TRAFFIC_PEAK = 20_000.0


@dataclass
class Target:
    """What the load is sent to: a running web server and the credentials it accepts."""

    port: int
    ingest_secret: str
    assign_secret: str
    token: str
    project: str
    experiment: str
    started_at: datetime
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def request(port: int, method: str, path: str, body: bytes | None, auth: str) -> tuple[int, bytes]:
    """One request on a fresh connection (gunicorn's sync workers close after each answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": "application/json", **_h(auth)}
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _h(auth: str) -> dict[str, str]:
    return {"Authorization": auth} if auth else {}


class Batches:
    """Event batches with ids unique to this run: half exposures, half purchases."""

    def __init__(self, target: Target, phase: str) -> None:
        self.target, self.phase = target, phase
        self.ts = (target.started_at.replace(microsecond=0)).isoformat()
        self.lock = threading.Lock()
        self.next = 0

    def take(self) -> bytes:
        with self.lock:
            number, self.next = self.next, self.next + 1
        t, prefix = self.target, f"{self.target.run}{self.phase}-{number}"
        rows = []
        for i in range(0, BATCH, 2):
            unit = f"{prefix}-{i}"
            rows.append(
                f'{{"event_id":"{prefix}-x{i}","type":"exposure","experiment":"{t.experiment}",'
                f'"variant":"{"control" if i % 4 else "treatment"}","unit_id":"{unit}",'
                f'"timestamp":"{self.ts}"}}'
            )
            rows.append(
                f'{{"event_id":"{prefix}-m{i}","type":"metric","name":"purchase",'
                f'"unit_id":"{unit}","value":{i % 7},"timestamp":"{self.ts}"}}'
            )
        return ('{"events":[' + ",".join(rows) + "]}").encode()


@dataclass
class Stream:
    """Results of one kind of request."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, ok: bool, detail: str = "", accepted: int = 0) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.accepted += accepted
            if not ok:
                self.errors.append(detail[:300])

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "requests": len(self.latencies),
            "per_second": round(len(self.latencies) / seconds, 1),
            "p50_ms": round(_pct(lat, 50) * 1000, 1),
            "p99_ms": round(_pct(lat, 99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1),
            "errors": len(self.errors),
            "events_accepted": self.accepted,
        }


def _pct(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def _ingest(target: Target, batches: Batches, stream: Stream, scheduled: float) -> None:
    body = batches.take()
    try:
        status, data = request(
            target.port, "POST", "/api/v1/events", body, f"Bearer {target.ingest_secret}"
        )
    except OSError as exc:
        stream.record(time.perf_counter() - scheduled, False, repr(exc))
        return
    ok = status == 202
    answer = json.loads(data) if ok else {}
    ok = ok and not answer.get("rejected") and answer.get("duplicates") == 0
    stream.record(
        time.perf_counter() - scheduled, ok, f"{status} {data[:200]!r}", answer.get("accepted", 0)
    )


def _assign(target: Target, stream: Stream, scheduled: float, bulk: bool) -> None:
    unit = uuid.uuid4().hex[:12]
    if bulk:
        units = ",".join(f'{{"unit_id":"{unit}-{i}"}}' for i in range(BULK_UNITS))
        path, body = "/api/v1/assign/bulk", f'{{"units":[{units}]}}'.encode()
    else:
        path, body = "/api/v1/assign", f'{{"unit_id":"{unit}"}}'.encode()
    try:
        status, data = request(target.port, "POST", path, body, f"Bearer {target.assign_secret}")
    except OSError as exc:
        stream.record(time.perf_counter() - scheduled, False, repr(exc))
        return
    stream.record(time.perf_counter() - scheduled, status == 200, f"{status} {data[:200]!r}")


def _analyze(target: Target, stream: Stream, scheduled: float) -> None:
    path = f"/api/v1/projects/{target.project}/experiments/{target.experiment}/analyze"
    try:
        status, data = request(target.port, "POST", path, b"", f"Token {target.token}")
    except OSError as exc:
        stream.record(time.perf_counter() - scheduled, False, repr(exc))
        return
    stream.record(time.perf_counter() - scheduled, status == 202, f"{status} {data[:200]!r}")


def measure_peak(
    target: Target, seconds: float, out: Callable[[str], None], phase: str = "p"
) -> float:
    """Closed loop: PEAK_CLIENTS senders post batches back to back; events/s acknowledged."""
    batches, stream = Batches(target, phase), Stream("peak")
    stop = time.perf_counter() + seconds

    def sender() -> None:
        while time.perf_counter() < stop:
            _ingest(target, batches, stream, time.perf_counter())

    threads = [threading.Thread(target=sender) for _ in range(PEAK_CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if stream.errors:
        raise RuntimeError(f"errors while measuring the peak: {stream.errors[:3]}")
    rate = stream.accepted / elapsed
    label = "peak" if phase == "p" else "peak again"
    out(f"{label}: {stream.accepted:,} events in {elapsed:.1f} s = {rate:,.0f} events/s")
    return rate


def _paced(rate: float, stop: float, submit: Callable[[float], None]) -> None:
    """Call submit(scheduled_time) `rate` times a second until `stop` (open loop)."""
    interval, start, k = 1.0 / rate, time.perf_counter(), 0
    while True:
        scheduled = start + k * interval
        if scheduled >= stop:
            return
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submit(scheduled)
        k += 1


def side_traffic_scale(peak: float) -> float:
    """The share of ASSIGN_RPS and BULK_RPS to run beside ingestion at this peak."""
    return min(1.0, peak / FULL_SIDE_TRAFFIC_PEAK)


def sustained(
    target: Target, seconds: float, ingest_eps: float, scale: float, out: Callable[[str], None]
) -> dict[str, Stream]:
    """Open-loop ingestion at ingest_eps, assignments at `scale` of their full rates, analyses
    every 15 s."""
    streams = {name: Stream(name) for name in ("events", "assign", "assign_bulk", "analyze")}
    batches = Batches(target, "s")
    stop = time.perf_counter() + seconds
    assign_rps, bulk_rps = ASSIGN_RPS * scale, BULK_RPS * scale
    out(
        f"sustained: {seconds:.0f} s, events {ingest_eps:,.0f}/s (batches of {BATCH:,}), "
        f"assign {assign_rps:.3g}/s, assign/bulk {bulk_rps:.3g}/s x {BULK_UNITS} "
        f"({scale:.0%} of the full side traffic), analysis every {ANALYZE_EVERY:g} s"
    )
    with ThreadPoolExecutor(max_workers=32) as pool:
        events, assign, bulk, analyze = (streams[n] for n in streams)
        plans = [
            (ingest_eps / BATCH, lambda s: pool.submit(_ingest, target, batches, events, s)),
            (assign_rps, lambda s: pool.submit(_assign, target, assign, s, False)),
            (bulk_rps, lambda s: pool.submit(_assign, target, bulk, s, True)),
            (1 / ANALYZE_EVERY, lambda s: pool.submit(_analyze, target, analyze, s)),
        ]
        pacers = [threading.Thread(target=_paced, args=(r, stop, f)) for r, f in plans]
        for p in pacers:
            p.start()
        for p in pacers:
            p.join()
    return streams


def run_load(
    target: Target,
    *,
    duration: float,
    peak_seconds: float,
    fraction: float,
    count_stored: Callable[[], int],
    snapshots_since: Callable[[datetime], int],
    bench_peak: float | None = None,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure the peak, hold the sustained load, verify; a JSON-able report."""
    load_average = os.getloadavg()[0]
    measured = measure_peak(target, peak_seconds, out)
    peak = max(measured, bench_peak or 0.0)
    if bench_peak:
        out(f"ingestion benchmark peak (var/bench): {bench_peak:,.0f} events/s")
    before = count_stored()
    began = datetime.now().astimezone()
    started = time.perf_counter()
    scale = side_traffic_scale(peak)
    streams = sustained(target, duration, fraction * peak, scale, out)
    elapsed = time.perf_counter() - started
    stored = count_stored() - before
    after = measure_peak(target, peak_seconds, out, phase="q")
    events = streams["events"]
    report = {
        "load": "sustained",
        "duration_s": round(elapsed, 1),
        "peak_events_per_second": round(peak),
        "measured_peak_events_per_second": round(measured),
        "peak_after_events_per_second": round(after),
        "bench_peak_events_per_second": round(bench_peak) if bench_peak else None,
        "target_events_per_second": round(fraction * peak),
        "side_traffic_scale": round(scale, 3),
        "load_average_at_start": round(load_average, 2),
        "achieved_events_per_second": round(events.accepted / elapsed),
        "events_accepted": events.accepted,
        "events_stored": stored,
        "events_lost": events.accepted - stored,
        "errors": sum(len(s.errors) for s in streams.values()),
        "error_samples": [e for s in streams.values() for e in s.errors[:3]],
        "snapshots_during_load": snapshots_since(began),
        "streams": {name: s.summary(elapsed) for name, s in streams.items()},
    }
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What makes the run a failure: errors, lost events, too low a rate, no analysis."""
    found = []
    if report["errors"]:
        found.append(f"{report['errors']} errors: {report['error_samples']}")
    if report["events_lost"] or report["events_stored"] != report["events_accepted"]:
        found.append(
            f"accepted {report['events_accepted']:,} events but stored {report['events_stored']:,}"
        )
    if report["achieved_events_per_second"] < 0.5 * report["peak_events_per_second"]:
        found.append(
            f"achieved {report['achieved_events_per_second']:,} events/s, under half the peak "
            f"{report['peak_events_per_second']:,}"
        )
    if report["snapshots_during_load"] < 1:
        found.append("no analysis snapshot was produced during the load")
    return found


def table(report: dict[str, Any]) -> str:
    rows = [("stream", "requests", "req/s", "events/s", "p50 ms", "p99 ms", "max ms", "errors")]
    for name, s in report["streams"].items():
        eps = s["events_accepted"] / report["duration_s"] if s["events_accepted"] else 0
        rows.append(
            (
                name,
                f"{s['requests']:,}",
                f"{s['per_second']:,}",
                f"{eps:,.0f}" if eps else "",
                f"{s['p50_ms']:,}",
                f"{s['p99_ms']:,}",
                f"{s['max_ms']:,}",
                str(s["errors"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(
        f"peak {report['peak_events_per_second']:,} events/s; target "
        f"{report['target_events_per_second']:,}; achieved "
        f"{report['achieved_events_per_second']:,}; lost {report['events_lost']}; "
        f"snapshots during load {report['snapshots_during_load']}; load average at the start "
        f"{report.get('load_average_at_start', '?')}; peak again after the load "
        f"{report.get('peak_after_events_per_second', '?'):,}"
    )
    return "\n".join(lines)


def bench_peak_from(var: Path) -> float | None:
    """The latest full (not --quick) `benchmark ingest` result's events/s, if any."""
    results = []
    for path in sorted((var / "bench").glob("ingest-*.json")):
        data = json.loads(path.read_text())
        if not data.get("quick") and data.get("http_events_per_second"):
            results.append(float(data["http_events_per_second"]))
    return results[-1] if results else None


# --- the command line: the long form ------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="sustained seconds")
    parser.add_argument("--peak-seconds", type=float, default=15, help="peak burst seconds")
    parser.add_argument("--fraction", type=float, default=0.55, help="of the peak, >= 0.5")
    parser.add_argument("--no-bench", action="store_true", help="ignore var/bench results")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        print("note: the load test is meant for PostgreSQL (set DATABASE_URL)", file=sys.stderr)
    call_command("migrate", verbosity=0)
    with LoadStack(Path(settings.VAR_DIR)) as (target, count, snapshots):
        bench = None if args.no_bench else bench_peak_from(Path(settings.VAR_DIR))
        report = run_load(
            target,
            duration=args.duration,
            peak_seconds=args.peak_seconds,
            fraction=max(0.5, args.fraction),
            count_stored=count,
            snapshots_since=snapshots,
            bench_peak=bench,
        )
    report.update(database=connection.vendor, broker=settings.CELERY_BROKER_URL.split(":")[0])
    print(table(report))
    out = Path(settings.VAR_DIR) / "bench" / f"load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    failed = problems(report)
    for problem in failed:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0


class LoadStack:
    """A fresh project with a running experiment, gunicorn and a Celery worker on this DB."""

    def __init__(self, var: Path, logs: Path | None = None) -> None:
        self.var = var
        self.logs = logs or var / "load"
        self.procs: list = []

    def __enter__(self):  # noqa: ANN204
        from django.contrib.auth import get_user_model

        from analysis.models import ResultSnapshot
        from assignments.models import Exposure, MetricEvent
        from experiments.services import (
            api_key_create,
            metric_create,
            project_create,
            user_token_create,
        )
        from tests.factories import running_experiment
        from tests.fault.stack import base_env, celery_worker, free_port, gunicorn, wait_healthy

        self.logs.mkdir(parents=True, exist_ok=True)
        slug = f"load-{uuid.uuid4().hex[:6]}"
        user = get_user_model().objects.create_user(slug, f"{slug}@example.com", None)
        project = project_create(slug=slug, name="Load test", owner=user)
        metric_create(
            project=project, key="purchase", name="Purchase", kind="mean", event_name="purchase"
        )
        experiment = running_experiment(project, key="load-checkout")
        self.project = project
        target = Target(
            port=free_port(),
            ingest_secret=api_key_create(project=project, name="ingest", scopes=["ingest"]).secret,
            assign_secret=api_key_create(project=project, name="assign", scopes=["assign"]).secret,
            token=user_token_create(user=user).token,
            project=slug,
            experiment=experiment.key,
            started_at=experiment.started_at,
        )
        env = base_env(self.var)
        web_log = self.logs / "web.log"
        self.procs = [
            gunicorn(env, target.port, web_log, workers=WEB_WORKERS, access_log=False).start(),
            celery_worker(env, self.logs / "worker.log", "load", pool="prefork").start(),
        ]
        wait_healthy(f"http://127.0.0.1:{target.port}", web_log)

        def count() -> int:
            return (
                Exposure.objects.filter(project=project).count()
                + MetricEvent.objects.filter(project=project).count()
            )

        def snapshots(since: datetime) -> int:
            return ResultSnapshot.objects.filter(
                experiment=experiment, computed_at__gte=since
            ).count()

        return target, count, snapshots

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
