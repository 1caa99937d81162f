"""`manage.py benchmark incremental`: a snapshot after a few new events, from the stored per-unit
aggregates (analysis/incremental.py), against the full recompute of the same snapshot.

Per size (default 1M and 10M metric events; 100k with --quick) the benchmark takes the data of
`benchmark analyze` (bench/analyze_data.py: 10 events per unit, 3 metrics: a binomial, a
winsorized mean, a ratio; CUPED on), then:

1. ``first``: one live snapshot, which builds the stored rows (a rebuild);
2. per round: adds ``share`` (default 1%) new metric events (copies of every hundredth stored
   event, one second later, under new ids: spread over the units like the rest), then times
   ``incremental`` (a live ``analysis_run``, the stored rows brought up to date) and ``full``
   (the same run with ``ABACUS_INCREMENTAL_AGGREGATES=0``) on the same data, each in a fresh
   process, and compares their rows (``max rel diff``).

Reported: the best round of each and their ratio, every round's ratio, the first snapshot's
time, and the load average before and after (both contenders run alternately in the same
conditions). The daily views (analysis/time_views.py) are left out of both. Options:
``events=1000000,2000000`` (sizes), ``share=0.01``, ``repeat=3`` (rounds; 1 with --quick),
``keep=1`` (keep the generated data for the next run; the added events are deleted),
``connections=2`` (``ABACUS_INCREMENTAL_CONNECTIONS`` of the incremental snapshots: how many
database connections add a round's events at once; 1 measures the work on one core).
"""

import os
from typing import Any

from django.conf import settings
from django.db import connection

from bench.analyze import _max_relative_difference, _measure
from bench.analyze_data import drop, setup

SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (100_000,)
SWITCH = "ABACUS_INCREMENTAL_AGGREGATES"
CONNECTIONS = "ABACUS_INCREMENTAL_CONNECTIONS"


def _snapshot(experiment_id: int, incremental: bool, connections: int) -> dict[str, Any]:
    env = {SWITCH: "1" if incremental else "0", CONNECTIONS: str(connections)}
    return _measure("sql", str(experiment_id), time_views=False, env=env)


def _steady_state() -> None:
    """PostgreSQL: after the rows are built, as autovacuum leaves a live table (no dead rows
    from an earlier run's rows, statistics taken)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE analysis_unitaggregate")


def _add_events(project_id: int, share: float, round_: int) -> int:
    """Copies of a ``share`` of the project's generated events (one second later, new ids,
    received now): the new events of one round."""
    every = max(1, round(1 / share))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO assignments_metricevent
                (project_id, event_id, name, unit_id, value, ts, properties, received_at)
            SELECT project_id, %s || event_id, name, unit_id, value,
                   ts + INTERVAL '1 second', properties, CURRENT_TIMESTAMP
            FROM assignments_metricevent
            WHERE project_id = %s AND event_id LIKE 'e%%' AND id %% %s = %s
            """
            if connection.vendor == "postgresql"
            else """
            INSERT INTO assignments_metricevent
                (project_id, event_id, name, unit_id, value, ts, properties, received_at)
            SELECT project_id, %s || event_id, name, unit_id, value,
                   datetime(ts, '+1 second'), properties, CURRENT_TIMESTAMP
            FROM assignments_metricevent
            WHERE project_id = %s AND event_id LIKE 'e%%' AND id %% %s = %s
            """,
            [f"n{round_}-", project_id, every, round_ % every],
        )
        return cursor.rowcount


def _remove_added(project_id: int, experiment_id: int) -> None:
    """The kept data as it was generated: the added events deleted, the stored rows gone (the
    next run's first snapshot builds them), and on PostgreSQL the tables vacuumed (as
    autovacuum would: else each run's deleted rows slow the next run's scans and lookups)."""
    from analysis.models import (
        AggregateState,
        UnitAggregate,
        UnitAggregateProgress,
        UnitAggregateTop,
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM assignments_metricevent WHERE project_id = %s AND event_id LIKE 'n%%'",
            [project_id],
        )
    AggregateState.objects.filter(experiment_id=experiment_id).delete()
    for model in (UnitAggregate, UnitAggregateTop, UnitAggregateProgress):
        model.objects.filter(experiment_id=experiment_id).delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE assignments_metricevent")
            cursor.execute(f"VACUUM FULL {UnitAggregate._meta.db_table}")


def _options(quick: bool, options: dict[str, str]) -> tuple[tuple[int, ...], float, int, bool, int]:
    sizes = (
        tuple(int(x) for x in options["events"].split(","))
        if options.get("events")
        else (QUICK_SIZES if quick else SIZES)
    )
    share = float(options.get("share", "0.01"))
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    repeat = int(options.get("repeat", "1" if quick else "3"))
    connections = int(options.get("connections", settings.ABACUS_INCREMENTAL_CONNECTIONS))
    if not 1 <= connections <= 16:
        raise ValueError("connections must be between 1 and 16")
    return sizes, share, repeat, options.get("keep") == "1", connections


def run_incremental(quick: bool, options: dict[str, str], out: Any) -> dict[str, Any]:
    sizes, share, repeat, keep, connections = _options(quick, options)
    load_before = os.getloadavg()
    out.write(
        f"database: {connection.vendor}; 3 metrics (binomial, winsorized mean, ratio), CUPED on; "
        f"{share:.1%} new events per round; the new events added on {connections} "
        f"connection(s); load average {load_before[0]:.1f}\n"
        f"{'events':>12} {'units':>10} {'first s':>8} {'full s':>8} {'incr s':>8} "
        f"{'incr/full':>9} {'rounds incr/full':>24} {'max rel diff':>12} {'cpu ratio':>9}\n"
    )
    results = []
    for events in sizes:
        project, data = setup(events, reuse=keep)
        experiment_id = data["experiment_id"]
        try:
            first = _snapshot(experiment_id, True, connections)
            _steady_state()
            rounds = []
            for r in range(repeat):
                added = _add_events(project.pk, share, r)
                incremental = _snapshot(experiment_id, True, connections)
                full = _snapshot(experiment_id, False, connections)
                rounds.append(
                    {
                        "added_events": added,
                        "incremental_seconds": incremental["seconds"],
                        "full_seconds": full["seconds"],
                        "incremental_cpu_seconds": incremental.get("cpu_seconds"),
                        "full_cpu_seconds": full.get("cpu_seconds"),
                        "ratio": incremental["seconds"] / full["seconds"],
                        "max_relative_difference": _max_relative_difference(
                            incremental["rows"], full["rows"]
                        ),
                    }
                )
        finally:
            if keep:
                _remove_added(project.pk, experiment_id)
            else:
                drop(project.slug)
        row = _row(events, data, first, rounds)
        results.append(row)
        out.write(_line(row) + "\n")
    load_after = os.getloadavg()
    out.write(
        "first: the first live snapshot (builds the stored rows); full and incr: the best round "
        "of analysis_run end to end with the incremental path off and on, after the same new "
        "events, each in a fresh process; cpu ratio: the same for the CPU time the whole machine "
        "spent during each (the run's process and the database's; the best round of each), "
        f"what the work costs whatever the cores it runs on; load average {load_after[0]:.1f} "
        "at the end.\n"
    )
    return {
        "benchmark": "incremental",
        "database": connection.vendor,
        "share": share,
        "connections": connections,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sizes": results,
    }


def _row(events: int, data: dict, first: dict, rounds: list[dict]) -> dict[str, Any]:
    best_full = min(r["full_seconds"] for r in rounds)
    best_incremental = min(r["incremental_seconds"] for r in rounds)
    cpu = [(r["incremental_cpu_seconds"], r["full_cpu_seconds"]) for r in rounds]
    cpu_ratio = None
    if all(i is not None and f for i, f in cpu):
        cpu_ratio = min(i for i, _ in cpu) / min(f for _, f in cpu)
    return {
        "events": events,
        **data,
        "first_seconds": first["seconds"],
        "full_seconds": best_full,
        "incremental_seconds": best_incremental,
        "ratio": best_incremental / best_full,
        "cpu_ratio": cpu_ratio,
        "rounds": rounds,
        "max_relative_difference": max(r["max_relative_difference"] for r in rounds),
    }


def _line(row: dict[str, Any]) -> str:
    ratios = " ".join(f"{r['ratio']:.3f}" for r in row["rounds"])
    return (
        f"{row['events']:>12,} {row['units']:>10,} {row['first_seconds']:>8.2f} "
        f"{row['full_seconds']:>8.2f} {row['incremental_seconds']:>8.2f} {row['ratio']:>9.3f} "
        f"{ratios:>24} {row['max_relative_difference']:>12.1e} "
        + (f"{row['cpu_ratio']:>9.3f}" if row["cpu_ratio"] is not None else f"{'-':>9}")
    )
