"""The data of `manage.py benchmark analyze` (bench/analyze.py): a project of its own with an
experiment of 3 metrics (a binomial, a winsorized mean, a ratio; CUPED on), and deterministic
exposures, assignments and metric events generated in SQL (INSERT ... SELECT over
generate_series on PostgreSQL, a recursive CTE on SQLite) into the real tables."""

import sys
import time
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

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
    units = max(1, events // EVENTS_PER_UNIT)
    multi = max(1, units * MULTI_SHARE_PER_MILLE // 1000)
    statements = [
        *_exposures_sql(project_id, experiment_id, variant_ids, units, multi),
        _events_sql(project_id, units, events),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    if connection.vendor == "postgresql":
        # The steady state of a live table (autovacuum has run): no first reader pays for
        # setting the new rows' hint bits, and the planner has statistics.
        with connection.cursor() as cursor:
            for table in ("assignments_exposure", "assignments_metricevent"):
                cursor.execute(f"VACUUM ANALYZE {table}")
    return {"units": units, "exposures": units + multi, "events": events}


def _exposures_sql(
    project_id: int, experiment_id: int, variant_ids: list[int], units: int, multi: int
) -> list[str]:
    """INSERT statements: one exposure and one assignment per unit, then a second exposure, to
    the other variant, for ``multi`` of the units."""
    from assignments.models import Exposure

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
    return [exposures_sql, multi_sql, assignments_sql]


def _events_sql(project_id: int, units: int, events: int) -> str:
    """The INSERT of the metric events. Event e: unit h1 % units; 20% purchase, 30% click, 50%
    page_view; from 3 days before to 4 days after the unit's exposure; purchases have a
    long-tailed value, 5% higher in the treatment."""
    i = _bigint("i")
    spread = 7 * 86400
    now = "CURRENT_TIMESTAMP"
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
    return f"""
        {with_e}INSERT INTO assignments_metricevent
            (project_id, event_id, name, unit_id, value, ts, properties, received_at)
        SELECT {project_id}, 'e' || i, {name}, 'u' || {unit}, {value},
               {_ts_plus_seconds(event_at)}, {_properties(i, kind, value)}, {now}
        FROM {source_e}"""


def _properties(i: str, kind: str, value: str) -> str:
    """Every event's properties (JSON): purchases ``{"plan", "amount", "items"}`` (plan free,
    pro or team; amount 1.5 times the value, missing on 2% and the text "n/a" on 1%; items 1 to
    5), clicks ``{"button"}``, page views ``{"path"}``: what the filtered metrics read."""
    h = _hash(i, 6)
    plan = f"(CASE {h} % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END)"
    # Divided before the modulo: the hashes are linear in i, and so is the event's kind (only
    # some residues are purchases); the division breaks that pattern.
    items = f"({_hash(i, 7)} / 977 % 5 + 1)"
    button = f"(CASE WHEN {h} % 4 = 0 THEN 'buy' ELSE 'nav' END)"
    path = f"('/p' || ({h} % 50))"
    if connection.vendor == "postgresql":
        obj, amount_text = "jsonb_build_object", "to_jsonb('n/a'::text)"
        amount = f"to_jsonb(ROUND(CAST({value} * 1.5 AS NUMERIC), 2))"
    else:
        obj, amount_text = "json_object", "'n/a'"
        amount = f"ROUND({value} * 1.5, 2)"
    missing = f"({_hash(i, 8)} / 991 % 100)"
    purchase = (
        f"CASE WHEN {missing} < 2 THEN {obj}('plan', {plan}, 'items', {items}) "
        f"ELSE {obj}('plan', {plan}, 'items', {items}, 'amount', "
        f"CASE WHEN {missing} < 3 THEN {amount_text} ELSE {amount} END) END"
    )
    return (
        f"(CASE WHEN {kind} < 2 THEN {purchase} WHEN {kind} < 5 THEN {obj}('button', {button}) "
        f"ELSE {obj}('path', {path}) END)"
    )


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


def setup(events: int, reuse: bool = False) -> tuple[Any, dict]:
    """A project of its own with the benchmark experiment (3 metrics, started at T0) and its
    generated data; with ``reuse``, one kept by an earlier run if it holds exactly that."""
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
    drop(slug)
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
    # One statement per table: no progress from inside; about a minute per million events on
    # a 2-core machine, so say what is happening and how long it took.
    print(f"generating {events:,} metric events and their exposures ...", file=sys.stderr)
    started = time.monotonic()
    try:
        counts = _generate(project.pk, experiment.pk, variant_ids, events)
        print(f"generated in {time.monotonic() - started:.0f} s", file=sys.stderr)
    except Exception:
        drop(slug)
        raise
    return Project.objects.get(pk=project.pk), {"experiment_id": experiment.pk, **counts}


def drop(slug: str) -> None:
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
