"""`manage.py benchmark analyze`: one full snapshot computed in SQL, against pandas.

For each size (default 100k, 1M and 10M metric events; 10 events and about 1 exposure per unit)
the benchmark generates deterministic data in SQL (INSERT ... SELECT over generate_series on
PostgreSQL, a recursive CTE on SQLite) into the real tables, in a project of its own, with an
experiment of 3 metrics (a binomial, a winsorized mean, a ratio; CUPED on): bench/analyze_data.py.
Then, each in a fresh Python process so that peak memory is the process's own:

- ``sql``: ``analysis_run`` end to end (aggregation SQL, statistics, recommendation, snapshot
  stored), timed wall-clock, peak RSS from getrusage;
- ``pandas``: ``pandas.read_sql`` of the same exposures and events, and the same per-unit
  windows, winsorization, CUPED sums and per-variant sufficient statistics in pandas (no
  statistics, no writes: strictly less work than ``sql``; bench/analyze_pandas.py). Its sums
  are compared with the snapshot's rows, which cross-checks the SQL at scale.

The contenders alternate (sql, pandas, sql, pandas) and each one's best run is reported, since
other load on the machine only adds time. Options (``--option key=value``):
``events=100000,1000000`` (sizes), ``repeat=2`` (runs of each; 1 with --quick), ``pandas=0``
(skip the baseline), ``keep=1`` (keep the generated projects and reuse kept ones; by default
they are deleted), ``explain=1`` (print PostgreSQL's EXPLAIN ANALYZE of the metrics query),
``properties=0`` (skip the variant with metrics from event properties,
bench/analyze_properties.py, which runs in the same run and prints its ratio to the plain one).

The report names the plan the metrics statement used (``analysis.aggregation.read_strategy``):
``hash_join`` on the schema the migrations create, ``index_lookup`` once PostgreSQL has the
covering index docs/benchmarks.md describes.
"""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import connection, transaction

from bench import analyze_properties
from bench.analyze_data import EVENTS_PER_UNIT, WINDOW_HOURS, drop, setup
from bench.common import machine_busy_seconds

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)


# --- the two contenders, each run in a child process ---------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_sql(experiment_id: int) -> dict[str, Any]:
    from analysis.models import TimeView
    from analysis.services import analysis_run

    aggregation_seconds = _time_aggregation()
    busy, started = machine_busy_seconds(), time.perf_counter()
    snapshot = analysis_run(experiment_id=experiment_id, trigger="benchmark")
    seconds = time.perf_counter() - started
    busy_after = machine_busy_seconds()
    # The daily and novelty views, when this run refreshed them (every run: the parent sets
    # ABACUS_TIME_VIEWS_INTERVAL=0 unless time_views=0): their statement's share of the run.
    view = TimeView.objects.filter(experiment_id=experiment_id, snapshot=snapshot).first()
    rows = {
        f"{r.metric_key}/{r.variant}": [r.n, r.sum, r.sum_sq, r.den_sum, r.cov_sum, r.sum_prod]
        for r in snapshot.rows.all()
    }
    return {
        "seconds": seconds,
        "snapshot_id": snapshot.pk,
        "data_through": snapshot.data_through.isoformat(),
        "recommendation": snapshot.recommendation,
        "rows": rows,
        "aggregation_seconds": aggregation_seconds[0],
        "time_views_seconds": view.seconds if view else None,
        "cpu_seconds": None if busy is None or busy_after is None else busy_after - busy,
    }


def _time_aggregation() -> list[float]:
    """The seconds the run spends in the aggregation statements (``[seconds]``, updated)."""
    from analysis import aggregation

    spent = [0.0]
    real = aggregation.experiment_aggregates

    def timed(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(**kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    aggregation.experiment_aggregates = timed
    return spent


def child_main(argv: list[str]) -> None:
    """Entry point of the measuring child process: prints one JSON line."""
    import django

    django.setup()
    from bench.analyze_pandas import child_pandas
    from core import heap

    heap.settle()  # as a worker's processes do when they start (config/celery.py)
    # A worker's connection is open between its tasks (CONN_MAX_AGE 60 s on PostgreSQL):
    # connecting is not part of what is measured.
    connection.ensure_connection()

    baseline = _peak_rss_mb()
    experiment_id = int(argv[1])
    runs = {"sql": lambda: _child_sql(experiment_id)}
    runs["pandas"] = lambda: child_pandas(experiment_id, argv[2])
    result = runs[argv[0]]()
    result.update(peak_rss_mb=_peak_rss_mb(), baseline_rss_mb=baseline)
    print("RESULT " + json.dumps(result))


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = f"{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{s['NAME']}"


def _measure(
    *args: str, time_views: bool = True, env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": _database_url(), "PYTHONUNBUFFERED": "1", **(env or {})}
    env["ABACUS_TIME_VIEWS_INTERVAL"] = "0" if time_views else str(10**9)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    code = "import sys; from bench.analyze import child_main; child_main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"benchmark child {args[0]} failed:\n{proc.stderr[-4000:]}")


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with every run's seconds and the highest peak memory of them all."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["seconds_runs"] = [r["seconds"] for r in runs]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return best


def _max_relative_difference(a: dict[str, list], b: dict[str, list]) -> float:
    worst = 0.0
    for key, values in a.items():
        for x, y in zip(values, b.get(key, []), strict=False):
            worst = max(worst, abs(x - y) / max(1.0, abs(x), abs(y)))
    return worst


def _explain(experiment_id: int, out: Any) -> None:
    """PostgreSQL's plan of the metrics statement, with timings: the statement the public
    ``experiment_aggregates`` runs, caught on its way to the database and run under
    ``EXPLAIN (ANALYZE, BUFFERS)`` first (the aggregation then runs as usual)."""
    from analysis.aggregation import MetricSpec, experiment_aggregates, read_strategy
    from experiments.models import Experiment

    experiment = Experiment.objects.get(pk=experiment_id)
    specs = [
        MetricSpec(
            key=m.key,
            kind=m.kind,
            event_name=m.event_name,
            denominator_event=m.denominator_event,
            window_hours=int(m.conversion_window_hours),
            winsorize_quantile=m.winsorize_quantile,
            cuped=m.cuped,
        )
        for m in (em.metric for em in experiment.experiment_metrics.select_related("metric"))
    ]
    strategy = read_strategy()
    plans: list[str] = []

    def explain_metrics_statement(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        reads_events = "assignments_metricevent" in sql and "assignments_exposure" in sql
        if not many and reads_events and not plans and not sql.startswith("EXPLAIN"):
            with context["connection"].cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plans.extend(row[0] for row in cursor.fetchall())
        return execute(sql, params, many, context)

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '256MB'")
        with connection.execute_wrapper(explain_metrics_statement):
            experiment_aggregates(
                experiment_id=experiment.pk,
                project_id=experiment.project_id,
                metrics=specs,
                since=experiment.phase_started_at,
                through=datetime.now(UTC),
                strategy=strategy,
            )
    out.write("\n".join(plans) + "\n")


# --- the command ---------------------------------------------------------------------------------


def run_analyze(quick: bool, options: dict[str, str], out: Any) -> dict[str, Any]:
    sizes, with_pandas, repeat, keep = _options(quick, options)
    time_views = options.get("time_views", "1") != "0"
    from analysis.aggregation import read_strategy

    strategy = read_strategy()
    results = []
    properties = options.get("properties", "1") != "0"
    variants: list[tuple[int, dict[str, Any]]] = []
    _write_header(out, strategy)
    for events in sizes:
        started = time.perf_counter()
        project, data = setup(events, reuse=keep)
        generated = time.perf_counter() - started
        try:
            if options.get("explain") == "1" and connection.vendor == "postgresql":
                _explain(data["experiment_id"], out)
            sql, pandas = _contend(data["experiment_id"], repeat, with_pandas, time_views)
            if properties:
                experiment = str(data["experiment_id"])
                variant = analyze_properties.contend(
                    data["experiment_id"],
                    repeat,
                    partial(_measure, "sql", experiment, time_views=time_views),
                    WINDOW_HOURS,
                )
        finally:
            if not keep:
                drop(project.slug)
        row, line = _report_size(events, data, generated, sql, pandas)
        out.write(line + "\n")
        if properties:
            row["properties"] = variant
            variants.append((events, variant))
        results.append(row)
    out.write(
        f"sql: analysis_run end to end (aggregation, statistics, snapshot stored); pandas: "
        f"read_sql + aggregation only; each the best of {repeat} alternating runs in a fresh "
        "process. MB: the process's peak RSS (the highest of its runs). views s: of sql s, the "
        "daily and novelty views' statement (every run refreshes them here; the worker does at "
        "most hourly; time_views=0 leaves them out).\n"
    )
    if variants:
        out.write(
            "Metrics from event properties (properties=0 leaves them out): the same snapshot "
            "with purchase-paid and revenue-amount (filters, value_property) instead of "
            "purchase and revenue, against the plain metrics; both on the full statement, "
            f"alternating, best of {repeat}; agg: the aggregation statement alone.\n"
            + analyze_properties.HEADER
            + "\n"
            + "".join(analyze_properties.line(events, v) + "\n" for events, v in variants)
        )
    return {
        "benchmark": "analyze",
        "database": connection.vendor,
        "read_strategy": strategy,
        "sizes": results,
    }


def _options(quick: bool, options: dict[str, str]) -> tuple[tuple[int, ...], bool, int, bool]:
    """(sizes, with_pandas, repeat, keep) from ``--quick`` and ``--option key=value``."""
    sizes = (
        tuple(int(x) for x in options["events"].split(","))
        if options.get("events")
        else (QUICK_SIZES if quick else SIZES)
    )
    with_pandas = options.get("pandas", "1") != "0"
    repeat = int(options.get("repeat", "1" if quick else "2"))
    keep = options.get("keep") == "1"
    return sizes, with_pandas, repeat, keep


def _write_header(out: Any, strategy: str) -> None:
    out.write(
        f"database: {connection.vendor}; 3 metrics (binomial, winsorized mean, ratio), CUPED on; "
        f"{EVENTS_PER_UNIT} events per unit; events read by {strategy}\n"
    )
    header = (
        f"{'events':>12} {'units':>10} {'generate s':>10} {'sql s':>8} {'sql MB':>8} "
        f"{'pandas s':>9} {'pandas MB':>9} {'sql/pandas':>10} {'max rel diff':>12} "
        f"{'views s':>8}"
    )
    out.write(header + "\n")


def _contend(
    experiment_id: int, repeat: int, with_pandas: bool, time_views: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The best sql run and the best pandas run (None without the baseline). The contenders
    alternate and each one's best run is kept: other load on the machine only ever adds time."""
    sql_runs, pandas_runs = [], []
    for _ in range(repeat):
        sql_runs.append(_measure("sql", str(experiment_id), time_views=time_views))
        if with_pandas:
            cutoff = sql_runs[0]["data_through"]
            pandas_runs.append(_measure("pandas", str(experiment_id), cutoff))
    return _best(sql_runs), (_best(pandas_runs) if pandas_runs else None)


def _report_size(
    events: int,
    data: dict,
    generated: float,
    sql: dict[str, Any],
    pandas: dict[str, Any] | None,
) -> tuple[dict[str, Any], str]:
    """The JSON row and the table line of one size."""
    row = {
        "events": events,
        **data,
        "generate_seconds": generated,
        "sql_seconds": sql["seconds"],
        "sql_peak_rss_mb": sql["peak_rss_mb"],
        "sql_baseline_rss_mb": sql["baseline_rss_mb"],
        "sql_runs_seconds": sql["seconds_runs"],
        "sql_time_views_seconds": sql.get("time_views_seconds"),
    }
    line = (
        f"{events:>12,} {data['units']:>10,} {generated:>10.1f} {sql['seconds']:>8.2f} "
        f"{sql['peak_rss_mb']:>8.0f}"
    )
    if pandas is not None:
        row.update(
            pandas_seconds=pandas["seconds"],
            pandas_runs_seconds=pandas["seconds_runs"],
            pandas_load_seconds=pandas["load_seconds"],
            pandas_peak_rss_mb=pandas["peak_rss_mb"],
            ratio=sql["seconds"] / pandas["seconds"],
            max_relative_difference=_max_relative_difference(sql["rows"], pandas["rows"]),
        )
        line += (
            f" {pandas['seconds']:>9.2f} {pandas['peak_rss_mb']:>9.0f} "
            f"{row['ratio']:>10.3f} {row['max_relative_difference']:>12.1e}"
        )
    else:
        line += " " * 43
    views = sql.get("time_views_seconds")
    line += f" {views:>8.2f}" if views is not None else f" {'-':>8}"
    return row, line
