"""`manage.py benchmark analyze`: one full snapshot computed in SQL, against pandas.

For each size (default 100k, 1M and 10M metric events; 10 events and about 1 exposure per unit)
the benchmark generates deterministic data in SQL (INSERT ... SELECT over generate_series on
PostgreSQL, a recursive CTE on SQLite) into the real tables, in a project of its own, with an
experiment of 3 metrics (a binomial, a winsorized mean, a ratio; CUPED on). Then, each in a fresh
Python process so that peak memory is the process's own:

- ``sql``: ``analysis_run`` end to end (aggregation SQL, statistics, recommendation, snapshot
  stored), timed wall-clock, peak RSS from getrusage;
- ``pandas``: ``pandas.read_sql`` of the same exposures and events, and the same per-unit
  windows, winsorization, CUPED sums and per-variant sufficient statistics in pandas (no
  statistics, no writes: strictly less work than ``sql``). Its sums are compared with the
  snapshot's rows, which cross-checks the SQL at scale.

The contenders alternate (sql, pandas, sql, pandas) and each one's best run is reported, since
other load on the machine only adds time. Options (``--option key=value``):
``events=100000,1000000`` (sizes), ``repeat=2`` (runs of each; 1 with --quick), ``pandas=0``
(skip the baseline), ``keep=1`` (keep the generated projects and reuse kept ones; by default
they are deleted), ``explain=1`` (print PostgreSQL's EXPLAIN ANALYZE of the metrics query).

The report names the plan the metrics statement used (``analysis.aggregation.read_strategy``):
``hash_join`` on the schema the migrations create, ``index_lookup`` once PostgreSQL has the
covering index docs/benchmarks.md describes.
"""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
EVENTS_PER_UNIT = 10
MULTI_SHARE_PER_MILLE = 5  # units also exposed to the other variant
WINDOW_HOURS = 72
T0 = datetime(2026, 1, 1, tzinfo=UTC)
METRICS = [
    dict(key="purchase", name="Purchase", kind="binomial", event_name="purchase"),
    dict(
        key="revenue",
        name="Revenue per user",
        kind="mean",
        event_name="purchase",
        winsorize_quantile=0.99,
    ),
    dict(
        key="ctr",
        name="Clicks per page view",
        kind="ratio",
        event_name="click",
        denominator_event="page_view",
    ),
]


# --- data ---------------------------------------------------------------------------------------


def _hash(expr: str, k: int) -> str:
    """A deterministic pseudo-random integer in [0, 4294967291) from an integer expression,
    identical on PostgreSQL and SQLite (64-bit integer arithmetic)."""
    return f"(({expr} * 2654435761 + {k * 40503 + 12345}) % 4294967291)"


def _series(n: int) -> tuple[str, str]:
    """(WITH prefix, FROM clause) producing column i = 0 .. n-1."""
    if connection.vendor == "postgresql":
        return "", f"generate_series(0, {int(n) - 1}) AS s(i)"
    return (
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {int(n) - 1}) ",
        "s",
    )


def _ts_plus_seconds(seconds_expr: str) -> str:
    if connection.vendor == "postgresql":
        return f"(TIMESTAMPTZ '{T0.isoformat()}' + ({seconds_expr}) * INTERVAL '1 second')"
    return f"datetime('{T0:%Y-%m-%d %H:%M:%S}', ({seconds_expr}) || ' seconds')"


def _bigint(expr: str) -> str:
    return f"CAST({expr} AS BIGINT)" if connection.vendor == "postgresql" else expr


def _generate(project_id: int, experiment_id: int, variant_ids: list[int], events: int) -> dict:
    """Exposures, assignments and metric events for one experiment, generated in SQL."""
    from assignments.models import Exposure

    units = max(1, events // EVENTS_PER_UNIT)
    control, treatment = variant_ids
    i = _bigint("i")
    variant = f"(CASE WHEN {_hash(i, 1)} % 2 = 0 THEN {control} ELSE {treatment} END)"
    spread = 7 * 86400  # exposures spread over a week
    exposed_at = f"({i} * {spread} / {units})"  # integer seconds after T0
    mismatch = (
        ", assignment_mismatch"
        if any(f.name == "assignment_mismatch" for f in Exposure._meta.concrete_fields)
        else ""
    )
    false = ", FALSE" if mismatch else ""
    now = "CURRENT_TIMESTAMP"
    with_, source = _series(units)
    exposures_sql = f"""
        {with_}INSERT INTO assignments_exposure
            (project_id, event_id, experiment_id, variant_id, unit_id, ts, received_at{mismatch})
        SELECT {project_id}, 'x' || i, {experiment_id}, {variant}, 'u' || i,
               {_ts_plus_seconds(exposed_at)}, {now}{false}
        FROM {source}"""
    multi = max(1, units * MULTI_SHARE_PER_MILLE // 1000)
    with_m, source_m = _series(multi)
    step = max(1, units // multi)
    j = f"({i} * {step})"
    multi_sql = f"""
        {with_m}INSERT INTO assignments_exposure
            (project_id, event_id, experiment_id, variant_id, unit_id, ts, received_at{mismatch})
        SELECT {project_id}, 'y' || {j}, {experiment_id},
               (CASE WHEN {_hash(j, 1)} % 2 = 0 THEN {treatment} ELSE {control} END),
               'u' || {j}, {_ts_plus_seconds(f"({j} * {spread} / {units}) + 3600")}, {now}{false}
        FROM {source_m}"""
    assignments_sql = f"""
        {with_}INSERT INTO assignments_assignment (experiment_id, unit_id, variant_id, phase,
                                                  assigned_at)
        SELECT {experiment_id}, 'u' || i, {variant}, 0, {_ts_plus_seconds(exposed_at)}
        FROM {source}"""
    # Event e: unit h1 % units; 20% purchase, 30% click, 50% page_view; from 3 days before to
    # 4 days after the unit's exposure; purchases have a long-tailed value, 5% higher in the
    # treatment.
    unit = f"({_hash(i, 2)} % {units})"
    kind = f"({_hash(i, 3)} % 10)"
    offset = f"({_hash(i, 4)} % {7 * 86400} - {3 * 86400})"
    tail = f"(({_hash(i, 5)} % 1000) * 1.0)"  # 5 + 5 t / (1001 - t): a long right tail
    unit_variant_is_treatment = f"({_hash(unit, 1)} % 2)"
    value = (
        f"(CASE WHEN {kind} < 2 THEN (5.0 + 5.0 * {tail} / (1001.0 - {tail}))"
        f" * (1.0 + 0.05 * {unit_variant_is_treatment}) ELSE 1.0 END)"
    )
    name = (
        f"(CASE WHEN {kind} < 2 THEN 'purchase' WHEN {kind} < 5 THEN 'click' ELSE 'page_view' END)"
    )
    event_at = f"({unit} * {spread} / {units} + {offset})"
    with_e, source_e = _series(events)
    events_sql = f"""
        {with_e}INSERT INTO assignments_metricevent
            (project_id, event_id, name, unit_id, value, ts, properties, received_at)
        SELECT {project_id}, 'e' || i, {name}, 'u' || {unit}, {value},
               {_ts_plus_seconds(event_at)}, NULL, {now}
        FROM {source_e}"""
    with transaction.atomic(), connection.cursor() as cursor:
        for sql in (exposures_sql, multi_sql, assignments_sql, events_sql):
            cursor.execute(sql)
    if connection.vendor == "postgresql":
        # The steady state of a live table (autovacuum has run): no first reader pays for
        # setting the new rows' hint bits, and the planner has statistics.
        with connection.cursor() as cursor:
            for table in ("assignments_exposure", "assignments_metricevent"):
                cursor.execute(f"VACUUM ANALYZE {table}")
    return {"units": units, "exposures": units + multi, "events": events}


def _kept(slug: str, events: int) -> tuple[Any, dict] | None:
    """A project kept by an earlier run with ``keep=1``, if it holds exactly this data."""
    from assignments.models import Exposure, MetricEvent
    from experiments.models import Experiment, Project

    project = Project.objects.filter(slug=slug).first()
    experiment = Experiment.objects.filter(project=project, key="bench").first()
    if project is None or experiment is None:
        return None
    if MetricEvent.objects.filter(project=project).count() != events:
        return None
    units = max(1, events // EVENTS_PER_UNIT)
    exposures = Exposure.objects.filter(experiment=experiment).count()
    return project, {
        "experiment_id": experiment.pk,
        "units": units,
        "exposures": exposures,
        "events": events,
    }


def _setup(events: int, reuse: bool = False) -> tuple[Any, dict]:
    from experiments.models import Experiment, Project
    from experiments.services import (
        experiment_create,
        experiment_start,
        metric_create,
        project_create,
    )

    slug = f"bench-analyze-{events}"
    kept = _kept(slug, events) if reuse else None
    if kept is not None:
        return kept
    _drop(slug)
    project = project_create(slug=slug, name=f"Benchmark: analyze {events:,} events")
    for metric in METRICS:
        metric_create(project=project, conversion_window_hours=WINDOW_HOURS, **metric)
    experiment = experiment_create(
        project=project,
        key="bench",
        name="Benchmark",
        variants=[
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        metrics=[
            {"metric": "purchase", "role": "primary"},
            {"metric": "revenue", "role": "secondary"},
            {"metric": "ctr", "role": "guardrail", "non_inferiority_margin": 0.05},
        ],
    )
    experiment = experiment_start(experiment=experiment)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=T0, phase_started_at=T0)
    variant_ids = [v.pk for v in experiment.variants.order_by("-is_control", "position")]
    try:
        counts = _generate(project.pk, experiment.pk, variant_ids, events)
    except Exception:
        _drop(slug)
        raise
    return Project.objects.get(pk=project.pk), {"experiment_id": experiment.pk, **counts}


def _drop(slug: str) -> None:
    """Delete a benchmark project, its raw rows first (in SQL: millions of them)."""
    from experiments.models import Experiment, Project

    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM assignments_metricevent WHERE project_id = %s", [project.pk])
        cursor.execute("DELETE FROM assignments_exposure WHERE project_id = %s", [project.pk])
        cursor.execute(
            "DELETE FROM assignments_assignment WHERE experiment_id IN "
            "(SELECT id FROM experiments_experiment WHERE project_id = %s)",
            [project.pk],
        )
    Experiment.objects.filter(project=project).delete()  # before the metrics they protect
    project.delete()


# --- the two contenders, each run in a child process ---------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_sql(experiment_id: int) -> dict[str, Any]:
    from analysis.services import analysis_run

    started = time.perf_counter()
    snapshot = analysis_run(experiment_id=experiment_id, trigger="benchmark")
    seconds = time.perf_counter() - started
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
    }


def _child_pandas(experiment_id: int, through: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from experiments.models import Experiment

    experiment = Experiment.objects.get(pk=experiment_id)
    variants = {v.pk: v.key for v in experiment.variants.all()}
    since = experiment.phase_started_at
    cutoff = datetime.fromisoformat(through)
    window = pd.Timedelta(hours=WINDOW_HOURS)
    started = time.perf_counter()
    raw = connection.connection
    mark = "%s" if connection.vendor == "postgresql" else "?"
    if connection.vendor == "postgresql":
        args: list[Any] = [since, cutoff]
    else:
        args = [connection.ops.adapt_datetimefield_value(x) for x in (since, cutoff)]
    exposures = pd.read_sql(
        "SELECT unit_id, variant_id, ts, assignment_mismatch FROM assignments_exposure "
        f"WHERE experiment_id = {mark} AND ts >= {mark} AND ts <= {mark}",
        raw,
        params=[experiment_id, *args],
        parse_dates={"ts": {"utc": True, "format": "ISO8601"}},
    )
    earliest = since - timedelta(hours=WINDOW_HOURS)
    if connection.vendor != "postgresql":
        earliest = connection.ops.adapt_datetimefield_value(earliest)
    events = pd.read_sql(
        "SELECT unit_id, name, value, ts FROM assignments_metricevent "
        f"WHERE project_id = {mark} AND name IN ({mark}, {mark}, {mark}) "
        f"AND ts >= {mark} AND ts <= {mark}",
        raw,
        params=[experiment.project_id, "purchase", "click", "page_view", earliest, args[1]],
        parse_dates={"ts": {"utc": True, "format": "ISO8601"}},
    )
    loaded = time.perf_counter() - started

    exposures["assignment_mismatch"] = exposures["assignment_mismatch"].astype(bool)
    units = exposures.groupby("unit_id").agg(
        t0=("ts", "min"),
        vmin=("variant_id", "min"),
        vmax=("variant_id", "max"),
        mismatch=("assignment_mismatch", "max"),
    )
    units = units[(units.vmin == units.vmax) & ~units.mismatch]
    joined = events.merge(units[["t0"]], left_on="unit_id", right_index=True)
    dt = joined["ts"] - joined["t0"]
    post = (dt >= pd.Timedelta(0)) & (dt < window)
    pre = (dt < pd.Timedelta(0)) & (dt >= -window)

    def per_unit(mask: Any, how: str) -> Any:
        picked = joined.loc[mask]
        grouped = picked.groupby("unit_id")["value"]
        series = grouped.size().astype(float) if how == "count" else grouped.sum()
        if how == "any":
            series = (series > 0).astype(float)
        return series.reindex(units.index, fill_value=0.0).to_numpy()

    is_purchase = joined["name"] == "purchase"
    columns = {
        "purchase": (
            per_unit(post & is_purchase, "any"),
            per_unit(pre & is_purchase, "any"),
            None,
        ),
        "revenue": (per_unit(post & is_purchase, "sum"), per_unit(pre & is_purchase, "sum"), None),
        "ctr": (
            per_unit(post & (joined["name"] == "click"), "sum"),
            None,
            per_unit(post & (joined["name"] == "page_view"), "sum"),
        ),
    }
    value, cov, _ = columns["revenue"]
    columns["revenue"] = (
        np.minimum(value, np.quantile(value, 0.99)),
        np.minimum(cov, np.quantile(cov, 0.99)),
        None,
    )
    variant_of = units["vmin"].to_numpy()
    rows = {}
    for key, (v, c, d) in columns.items():
        for variant_id, variant_key in variants.items():
            m = variant_of == variant_id
            rows[f"{key}/{variant_key}"] = [
                int(m.sum()),
                float(v[m].sum()),
                float((v[m] ** 2).sum()),
                float(d[m].sum()) if d is not None else 0.0,
                float(c[m].sum()) if c is not None else 0.0,
                float((v[m] * d[m]).sum()) if d is not None else 0.0,
            ]
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": loaded,
        "rows_loaded": len(exposures) + len(events),
        "rows": rows,
    }


def child_main(argv: list[str]) -> None:
    """Entry point of the measuring child process: prints one JSON line."""
    import django

    django.setup()
    baseline = _peak_rss_mb()
    experiment_id = int(argv[1])
    runs = {"sql": lambda: _child_sql(experiment_id)}
    runs["pandas"] = lambda: _child_pandas(experiment_id, argv[2])
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


def _measure(*args: str) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": _database_url(), "PYTHONUNBUFFERED": "1"}
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
    sizes = (
        tuple(int(x) for x in options["events"].split(","))
        if options.get("events")
        else (QUICK_SIZES if quick else SIZES)
    )
    with_pandas = options.get("pandas", "1") != "0"
    repeat = int(options.get("repeat", "1" if quick else "2"))
    keep = options.get("keep") == "1"
    from analysis.aggregation import read_strategy

    strategy = read_strategy()
    results = []
    out.write(
        f"database: {connection.vendor}; 3 metrics (binomial, winsorized mean, ratio), CUPED on; "
        f"{EVENTS_PER_UNIT} events per unit; events read by {strategy}\n"
    )
    header = (
        f"{'events':>12} {'units':>10} {'generate s':>10} {'sql s':>8} {'sql MB':>8} "
        f"{'pandas s':>9} {'pandas MB':>9} {'sql/pandas':>10} {'max rel diff':>12}"
    )
    out.write(header + "\n")
    for events in sizes:
        started = time.perf_counter()
        project, data = _setup(events, reuse=keep)
        generated = time.perf_counter() - started
        try:
            if options.get("explain") == "1" and connection.vendor == "postgresql":
                _explain(data["experiment_id"], out)
            # Alternate the contenders and keep each one's best run: other load on the
            # machine only ever adds time.
            sql_runs, pandas_runs = [], []
            for _ in range(repeat):
                sql_runs.append(_measure("sql", str(data["experiment_id"])))
                if with_pandas:
                    cutoff = sql_runs[0]["data_through"]
                    pandas_runs.append(_measure("pandas", str(data["experiment_id"]), cutoff))
            sql = _best(sql_runs)
            pandas = _best(pandas_runs) if pandas_runs else None
        finally:
            if not keep:
                _drop(project.slug)
        row = {
            "events": events,
            **data,
            "generate_seconds": generated,
            "sql_seconds": sql["seconds"],
            "sql_peak_rss_mb": sql["peak_rss_mb"],
            "sql_baseline_rss_mb": sql["baseline_rss_mb"],
            "sql_runs_seconds": sql["seconds_runs"],
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
        out.write(line + "\n")
        results.append(row)
    out.write(
        f"sql: analysis_run end to end (aggregation, statistics, snapshot stored); pandas: "
        f"read_sql + aggregation only; each the best of {repeat} alternating runs in a fresh "
        "process. MB: the process's peak RSS (the highest of its runs).\n"
    )
    return {
        "benchmark": "analyze",
        "database": connection.vendor,
        "read_strategy": strategy,
        "sizes": results,
    }
