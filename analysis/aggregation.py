"""SQL that turns raw events into per-variant sufficient statistics; raw rows never reach Python.

One statement per experiment computes every metric (up to ``METRICS_PER_QUERY`` at a time) and
counts the exposed units. The rules, which tests/analysis/test_aggregation.py checks on
hand-computed data on SQLite and PostgreSQL:

Units. The analysis reads exposures only. The analysis window is the current phase:
``since <= exposure ts <= through`` (the cut-off). A unit's first exposure in the window fixes its
variant (the one the exposure names) and its start time t0. Units exposed to more than one
variant in the window, or with an exposure flagged ``assignment_mismatch`` at ingestion (it
named a variant other than the unit's stored assignment, so the unit has seen two), are left out
of every metric and counted (a health warning above 1%). Exposures whose unit never called
/assign count like any other: GrowthBook SDKs bucket locally, and ingestion stores their
assignment from the exposure. Exposures before the phase started or after the cut-off are
ignored (a unit first exposed in an earlier phase starts at its first exposure in this one).

Metric value per unit, from the metric's events with ``t0 <= ts < t0 + window`` and
``ts <= through`` (window = the metric's conversion_window_hours):
  binomial: 1 if there is such an event, else 0;   count: the number of such events;
  mean: the sum of their values;   ratio: numerator = that sum, denominator = the sum of the
  denominator event's values (events default to value 1, so usually a count).
Units without events count with 0. Events before t0 never count toward the metric; those with
``t0 - window <= ts < t0`` form the CUPED covariate, the same metric over the pre-exposure window
(not for ratio metrics: the stats engine does not apply CUPED to them).

Late events count by their own timestamp, whenever they arrive: an event stamped before an
earlier snapshot's cut-off but received after it is counted from the next snapshot on, so a
snapshot is a function of (the events stored, its cut-off). Events stamped after the cut-off
(clock skew, or data newer than a backfill's cut-off) are left out. A unit whose window is still
open at the cut-off counts with the events so far.

Winsorization (``winsorize_quantile`` q; not for binomial metrics, whose 0/1 values it would
destroy): each per-unit column (value, ratio denominator, covariate) is capped at its own
q-quantile over all analysed units of the experiment, arms pooled and zeros included. The
quantile interpolates linearly between order statistics (Hyndman-Fan definition 7):
PostgreSQL's ``percentile_cont``, and on SQLite the same formula over ROW_NUMBER(); it equals
``analysis.stats.winsor_cap`` on the per-unit values.

Per variant (and unit state) the statement returns n, sum, sum_sq and, for ratio and CUPED,
den_sum, den_sum_sq, sum_prod, cov_sum, cov_sum_sq, cov_sum_prod: a few small rows.

The statement is built from named CTEs: ``exposed`` (one row per unit: variant, state, t0 and
window bounds), ``per_unit`` (one row per unit: its metric columns), ``caps`` and ``capped``
(winsorization), then the per-variant sums. ``per_unit`` reads events in one of two ways (see
``read_strategy``): a hash join of all units with the project's events (any schema, SQLite
included), or, on PostgreSQL with a covering index, one index-only lookup per unit in unit order.
"""

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from analysis.stats import SampleStats

logger = logging.getLogger(__name__)

METRICS_PER_QUERY = 16  # keeps one statement's width and hash-aggregate state bounded


@dataclass(frozen=True)
class MetricSpec:
    key: str
    kind: str  # binomial | mean | count | ratio
    event_name: str
    denominator_event: str = ""
    window_hours: int = 72
    winsorize_quantile: float | None = None
    cuped: bool = True


@dataclass(frozen=True)
class ExposureCounts:
    units_by_variant: dict[int, int]  # single-variant units per variant id
    multi_variant_units: int  # left out: exposed to two variants, or against their assignment
    assignment_mismatch: int = 0  # of those, units whose only variant contradicts the assignment

    @property
    def units(self) -> int:
        return sum(self.units_by_variant.values())


@dataclass(frozen=True)
class MetricAggregate:
    """One metric: per-variant sufficient statistics, and the winsorization caps used."""

    stats: dict[int, SampleStats]  # by variant id
    caps: dict[str, float] = field(default_factory=dict)  # "value" | "denominator" | "covariate"


# --- dialect: the few pieces that differ between PostgreSQL and SQLite ----------------------


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _param_ts(value: datetime) -> object:
    """A datetime parameter comparable with a stored one (SQLite stores naive UTC text)."""
    if _is_postgres():
        return value
    return connection.ops.adapt_datetimefield_value(value)


def _instant(column: str) -> str:
    """A column as a value that supports `+ hours` arithmetic exactly.

    PostgreSQL: the timestamp itself. SQLite: integer microseconds since the epoch, from the
    stored text 'YYYY-MM-DD HH:MM:SS[.ffffff]' (julianday's float would blur the boundaries).
    """
    if _is_postgres():
        return column
    return (
        f"(CAST(strftime('%%s', {column}) AS INTEGER) * 1000000"
        f" + CAST(substr({column}, 21, 6) AS INTEGER))"
    )


def _shift(instant: str, hours: int) -> str:
    """`instant + hours` (hours may be negative), in the representation of `_instant`."""
    hours = int(hours)
    if _is_postgres():
        return f"({instant} + INTERVAL '{hours} hours')"
    return f"({instant} + {hours * 3_600_000_000})"


def _least(a: str, b: str) -> str:
    return f"LEAST({a}, {b})" if _is_postgres() else f"MIN({a}, {b})"


def _fence() -> str:
    """Keeps a subquery's computed columns computed once per row: without it the planner
    inlines them into every aggregate FILTER that reads them (six CASEs per event, not one)."""
    return "OFFSET 0" if _is_postgres() else "LIMIT -1 OFFSET 0"


def _materialized() -> str:
    """Compute a CTE once even though two later steps read it."""
    if _is_postgres() or connection.Database.sqlite_version_info >= (3, 35):
        return "MATERIALIZED "
    return ""


def _caps_cte(columns: Sequence[tuple[str, float]]) -> str:
    """SELECT of each column's q-quantile over per_unit, named cap_<column>."""
    if _is_postgres():
        parts = [
            f"percentile_cont({float(q)!r}) WITHIN GROUP (ORDER BY {name}) AS cap_{name}"
            for name, q in columns
        ]
        return f"SELECT {', '.join(parts)} FROM per_unit WHERE state = {CLEAN}"
    parts = []
    for name, q in columns:
        h = f"((n - 1) * {float(q)!r})"  # 0-based position of the quantile
        parts.append(
            f"""(SELECT lo + (h - CAST(h AS INTEGER)) * (COALESCE(hi, lo) - lo) FROM (
                    SELECT MAX(CASE WHEN r = CAST({h} AS INTEGER) THEN x END) AS lo,
                           MAX(CASE WHEN r = CAST({h} AS INTEGER) + 1 THEN x END) AS hi,
                           MAX({h}) AS h
                    FROM (SELECT {name} AS x, ROW_NUMBER() OVER (ORDER BY {name}) - 1 AS r,
                                 COUNT(*) OVER () AS n FROM per_unit WHERE state = {CLEAN})))
                    AS cap_{name}"""
        )
    return f"SELECT {', '.join(parts)}"


# --- exposures --------------------------------------------------------------------------------

_MISMATCH = "MAX(CASE WHEN assignment_mismatch THEN 1 ELSE 0 END)"


# A unit's state in the window: analysed, or left out for one of two reasons.
CLEAN, MULTI_VARIANT, MISMATCH = 0, 1, 2


def _exposed_cte(windows: Sequence[int] = (), ordered: bool = False) -> str:
    """Per unit in the window: an integer key (its first exposure row's id), variant, state,
    first exposure t0 and the bounds of each metric window, computed once per unit here rather
    than once per joined event.

    Multi-variant units are dropped only after the events are joined: a filter here would make
    PostgreSQL expect a handful of units (it cannot estimate a HAVING on aggregates) and pick a
    nested loop over millions of events."""
    t0 = _instant("MIN(ts)")
    bounds = "".join(f", {_shift(t0, h)} AS end_{h}, {_shift(t0, -h)} AS pre_{h}" for h in windows)
    return f"""
    exposed AS (
        SELECT unit_id, MIN(id) AS uid, MIN(variant_id) AS variant_id,
               CASE WHEN MIN(variant_id) <> MAX(variant_id) THEN {MULTI_VARIANT}
                    WHEN {_MISMATCH} = 1 THEN {MISMATCH} ELSE {CLEAN} END AS state,
               {t0} AS t0{bounds}
        FROM assignments_exposure
        WHERE experiment_id = %(experiment)s AND ts >= %(since)s AND ts <= %(through)s
        GROUP BY unit_id{" ORDER BY unit_id" if ordered else ""}
    )"""


def _counts(rows: Sequence[tuple[int, int, int]]) -> ExposureCounts:
    """ExposureCounts from (variant id, state, units) rows."""
    by_variant: dict[int, int] = {}
    multi = mismatch = 0
    for variant_id, state, count in rows:
        if state == CLEAN:
            by_variant[variant_id] = by_variant.get(variant_id, 0) + int(count)
        else:
            multi += int(count)
            mismatch += int(count) if state == MISMATCH else 0
    return ExposureCounts(by_variant, multi, mismatch)


def exposure_counts(experiment_id: int, since: datetime, through: datetime) -> ExposureCounts:
    """Analysed units per variant in the window, and the multi-variant units left out.

    (experiment_aggregates returns the same counts from its metrics query.)"""
    sql = f"""
    WITH {_exposed_cte()}
    SELECT variant_id, state, COUNT(*) FROM exposed GROUP BY variant_id, state
    """
    params = {"experiment": experiment_id, "since": _param_ts(since), "through": _param_ts(through)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _counts(cursor.fetchall())


# --- how to read each unit's events -----------------------------------------------------------

HASH_JOIN = "hash_join"  # any schema: one hash join of units and events, then a hash aggregate
INDEX_LOOKUP = "index_lookup"  # PostgreSQL with COVERING_INDEX: per-unit index-only lookups
COVERING_INDEX = ("project_id", "unit_id", "ts")  # leading columns; must also hold name, value

_INDEX_COLUMNS = """
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = 'assignments_metricevent'::regclass
    GROUP BY i.indexrelid
"""


def read_strategy() -> str:
    """How the metrics statement reads events: INDEX_LOOKUP when PostgreSQL has an index on
    assignments_metricevent (project_id, unit_id, ts) that also holds name and value (e.g.
    ``INCLUDE (name, value)``), else HASH_JOIN.

    At 10M events the index lookups take less than half the time of the hash join: the units
    are visited in unit_id order, so the lookups walk the index sequentially, and no hash table
    of a million units is probed at random. Without such an index the lookups would fetch every
    event's value from the table at random, several times slower than the hash join."""
    if not _is_postgres():
        return HASH_JOIN
    with connection.cursor() as cursor:
        cursor.execute(_INDEX_COLUMNS)
        for (columns,) in cursor.fetchall():
            if tuple(columns[:3]) == COVERING_INDEX and {"name", "value"} <= set(columns):
                return INDEX_LOOKUP
    return HASH_JOIN


# --- metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str  # SQL alias in per_unit
    expr: str  # aggregate over one unit's joined events
    cap_quantile: float | None


def _condition(code: int, window_hours: int, pre: bool) -> str:
    """The joined event is of event code ``code`` and inside the unit's window, or its
    pre-exposure window: one integer comparison per aggregate (see ``_slot``)."""
    return f"j.s{window_hours} = {2 * code + (2 if pre else 1)}"


def _slot(names: int, window_hours: int, widest: bool) -> str:
    """Per joined event and window: 2 k + 1 inside the window, 2 k + 2 inside the pre-exposure
    window (k = the event name's code), NULL otherwise. The join already keeps only events
    inside the widest window pair, so for that one the side of t0 is enough."""
    t = _instant("e.ts")
    code = "CASE e.name " + " ".join(f"WHEN %(name{i})s THEN {2 * i}" for i in range(names))
    if widest:
        side = f"CASE WHEN {t} >= u.t0 THEN 1 ELSE 2 END"
    else:
        h = window_hours
        side = (
            f"CASE WHEN {t} >= u.t0 AND {t} < u.end_{h} THEN 1"
            f" WHEN {t} < u.t0 AND {t} >= u.pre_{h} THEN 2 END"
        )
    return f"({code} END) + ({side}) AS s{window_hours}"


# Float literals: PostgreSQL would otherwise sum the numeric type, several times slower.
_ONE = "CAST(1 AS DOUBLE PRECISION)"
_ZERO = "CAST(0 AS DOUBLE PRECISION)"


def _per_unit_value(kind: str, condition: str) -> str:
    # FILTER skips the aggregate's work for the rows that do not match (most of them).
    if kind == "binomial":
        return f"CASE WHEN COUNT(*) FILTER (WHERE {condition}) > 0 THEN {_ONE} ELSE {_ZERO} END"
    if kind == "count":
        return f"CAST(COUNT(*) FILTER (WHERE {condition}) AS DOUBLE PRECISION)"
    return f"COALESCE(SUM(j.value) FILTER (WHERE {condition}), {_ZERO})"


def _columns(index: int, metric: MetricSpec, codes: dict[str, int]) -> dict[str, _Column]:
    """The per-unit columns of one metric: value, and denominator or covariate."""
    q = metric.winsorize_quantile if metric.kind != "binomial" else None
    if q is not None and q >= 1:
        q = None
    hours = int(metric.window_hours)
    code = codes[metric.event_name]
    cols = {
        "value": _Column(
            f"m{index}_v", _per_unit_value(metric.kind, _condition(code, hours, False)), q
        )
    }
    if metric.kind == "ratio":
        den = codes[metric.denominator_event]
        cols["denominator"] = _Column(
            f"m{index}_d", _per_unit_value("mean", _condition(den, hours, False)), q
        )
    elif metric.cuped:
        cols["covariate"] = _Column(
            f"m{index}_c", _per_unit_value(metric.kind, _condition(code, hours, True)), q
        )
    return cols


def _event_names(metrics: Sequence[MetricSpec]) -> list[str]:
    names: list[str] = []
    for m in metrics:
        for name in (m.event_name, m.denominator_event if m.kind == "ratio" else ""):
            if name and name not in names:
                names.append(name)
    return names


def _metrics_sql(
    metrics: Sequence[MetricSpec],
    columns: list[dict[str, _Column]],
    names: list[str],
    strategy: str = HASH_JOIN,
) -> str:
    windows = sorted({int(m.window_hours) for m in metrics})
    t = _instant("e.ts")
    widest = windows[-1]
    slots = ", ".join(_slot(len(names), h, h == widest) for h in windows)
    name_list = ", ".join(f"%(name{i})s" for i in range(len(names)))
    flat = [c for cols in columns for c in cols.values()]
    per_unit = ",\n               ".join(f"{c.expr} AS {c.name}" for c in flat)
    capped = [c for c in flat if c.cap_quantile is not None]
    if capped:
        caps = _caps_cte([(c.name, float(c.cap_quantile)) for c in capped])  # type: ignore[arg-type]
        capped_names = {c.name for c in capped}
        selected = ", ".join(
            f"{_least(f'p.{c.name}', f'COALESCE(caps.cap_{c.name}, p.{c.name})')} AS {c.name}"
            if c.name in capped_names
            else f"p.{c.name}"
            for c in flat
        )
        cap_values = ", ".join(f"caps.cap_{c.name}" for c in capped)
        finals = f""",
    caps AS ({caps}),
    capped AS (
        SELECT p.variant_id, p.state, {selected}, {cap_values}
        FROM per_unit p CROSS JOIN caps
    )"""
        source = "capped"
    else:
        finals, source = "", "per_unit"

    sums = ["COUNT(*)"]
    for cols in columns:
        v = cols["value"].name
        sums += [f"COALESCE(SUM({v}), 0)", f"COALESCE(SUM({v} * {v}), 0)"]
        if "denominator" in cols:
            d = cols["denominator"].name
            sums += [
                f"COALESCE(SUM({d}), 0)",
                f"COALESCE(SUM({d} * {d}), 0)",
                f"COALESCE(SUM({v} * {d}), 0)",
            ]
        if "covariate" in cols:
            c = cols["covariate"].name
            sums += [
                f"COALESCE(SUM({c}), 0)",
                f"COALESCE(SUM({c} * {c}), 0)",
                f"COALESCE(SUM({v} * {c}), 0)",
            ]
        sums += [f"MAX(cap_{c.name})" for c in cols.values() if c.cap_quantile is not None]
    if strategy == INDEX_LOOKUP:
        # Units in unit_id order, each one's events read from the covering index: the probes
        # walk the index in order, and the aggregate over one unit's few events is one row.
        units = f"""
    WITH {_exposed_cte(windows, ordered=True)},
    per_unit AS MATERIALIZED (
        SELECT u.variant_id, u.state, s.*
        FROM exposed u CROSS JOIN LATERAL (
            SELECT {per_unit}
            FROM (
                SELECT e.value, {slots}
                FROM assignments_metricevent e
                WHERE e.project_id = %(project)s AND e.unit_id = u.unit_id
                  AND e.ts >= u.pre_{widest} AND e.ts < u.end_{widest}
                  AND e.ts <= %(through)s AND e.name IN ({name_list})
                OFFSET 0
            ) j
        ) s
    )"""
    else:
        units = f"""
    WITH {_exposed_cte(windows)},
    joined AS (
        SELECT u.uid, u.variant_id, u.state, e.value, {slots}
        FROM exposed u
        LEFT JOIN assignments_metricevent e
          ON e.project_id = %(project)s AND e.name IN ({name_list}) AND e.unit_id = u.unit_id
         AND e.ts >= %(earliest)s AND e.ts <= %(through)s
         AND {t} >= u.pre_{widest} AND {t} < u.end_{widest}
        {_fence()}
    ),
    per_unit AS {_materialized()}(
        SELECT j.variant_id, j.state,
               {per_unit}
        FROM joined j
        GROUP BY j.uid, j.variant_id, j.state
    )"""
    return f"""{units}{finals}
    SELECT variant_id, state, {", ".join(sums)}
    FROM {source}
    GROUP BY variant_id, state
    """


def _read_rows(
    rows: Sequence[Sequence[object]], metrics: Sequence[MetricSpec], columns: list[dict]
) -> tuple[ExposureCounts, dict[str, MetricAggregate]]:
    """(variant id, state, n, sums..., caps...) rows -> unit counts and per-metric statistics."""
    stats: dict[str, dict[int, SampleStats]] = {m.key: {} for m in metrics}
    caps: dict[str, dict[str, float]] = {m.key: {} for m in metrics}
    for row in rows:
        variant_id, state, n = int(row[0]), int(row[1]), int(row[2])  # type: ignore[arg-type]
        if state != CLEAN:
            continue
        raw = list(row[3:])
        values = [float(x or 0) for x in raw]  # type: ignore[arg-type]
        pos = 0
        for metric, cols in zip(metrics, columns, strict=True):
            fields: dict[str, float] = {"sum": values[pos], "sum_sq": values[pos + 1]}
            pos += 2
            if "denominator" in cols:
                fields.update(
                    den_sum=values[pos], den_sum_sq=values[pos + 1], sum_prod=values[pos + 2]
                )
                pos += 3
            if "covariate" in cols:
                fields.update(
                    cov_sum=values[pos], cov_sum_sq=values[pos + 1], cov_sum_prod=values[pos + 2]
                )
                pos += 3
            for role, col in cols.items():
                if col.cap_quantile is not None:
                    if raw[pos] is not None:
                        caps[metric.key][role] = float(raw[pos])  # type: ignore[arg-type]
                    pos += 1
            stats[metric.key][variant_id] = SampleStats(n=n, **fields)
    counts = _counts([(int(r[0]), int(r[1]), int(r[2])) for r in rows])  # type: ignore[arg-type]
    return counts, {m.key: MetricAggregate(stats[m.key], caps[m.key]) for m in metrics}


@dataclass(frozen=True)
class ExperimentAggregates:
    counts: ExposureCounts
    metrics: dict[str, MetricAggregate]  # by metric key; a metric in ``errors`` is absent
    errors: dict[str, str] = field(default_factory=dict)  # metric key -> why it failed


OVERFLOW_REASON = (
    "the sums overflow: an event value is too large; delete or exclude it (docs/operations.md)"
)


def _is_per_metric(exc: DatabaseError) -> bool:
    """Whether a failed statement may be the fault of one metric's data or SQL (retry metric
    by metric), rather than of the database (unreachable, timed out, locked: re-raise)."""
    if isinstance(exc, InterfaceError):
        return False
    message = str(exc).lower()
    if _is_postgres():
        # psycopg: DataError (22xxx, e.g. overflow), ProgrammingError (42xxx), ...; an
        # OperationalError is a lost connection, a statement timeout or a cancelled query.
        return not isinstance(exc, OperationalError)
    # SQLite reports SQL errors as OperationalError too; only a busy or broken file is not one.
    return not any(word in message for word in ("locked", "busy", "disk i/o", "unable to open"))


def _reason(exc: BaseException) -> str:
    """A short reason for a metric that cannot be computed, a person can act on."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "out of range" in message.lower() or "overflow" in message.lower():
        return OVERFLOW_REASON
    return f"the aggregation failed ({type(exc).__name__}: {message[:200]})"


def _finite(aggregate: MetricAggregate) -> bool:
    """SQLite does not raise on float overflow: its sums become inf (or NaN, read as NULL)."""
    return all(
        math.isfinite(value)
        for stats in aggregate.stats.values()
        for value in (
            stats.sum,
            stats.sum_sq,
            stats.den_sum,
            stats.den_sum_sq,
            stats.sum_prod,
            stats.cov_sum,
            stats.cov_sum_sq,
            stats.cov_sum_prod,
        )
    ) and all(math.isfinite(cap) for cap in aggregate.caps.values())


def _group_rows(
    group: Sequence[MetricSpec],
    *,
    experiment_id: int,
    project_id: int,
    since: datetime,
    through: datetime,
    strategy: str,
) -> tuple[ExposureCounts, dict[str, MetricAggregate]]:
    """One statement for ``group``, inside a savepoint: a failure leaves the caller's
    transaction usable (PostgreSQL aborts a transaction on any failed statement)."""
    names = _event_names(group)
    codes = {name: i for i, name in enumerate(names)}
    columns = [_columns(i, m, codes) for i, m in enumerate(group)]
    longest = max(int(m.window_hours) for m in group)
    params: dict[str, object] = {
        "experiment": experiment_id,
        "project": project_id,
        "since": _param_ts(since),
        "through": _param_ts(through),
        "earliest": _param_ts(since - timedelta(hours=longest)),
        **{f"name{i}": name for i, name in enumerate(names)},
    }
    # SQLite leaves its transaction usable after a failed statement (and a new atomic block
    # there would take the write lock): no savepoint needed.
    savepoint = transaction.atomic() if _is_postgres() else contextlib.nullcontext()
    with savepoint, connection.cursor() as cursor:
        cursor.execute(_metrics_sql(group, columns, names, strategy), params)
        rows = cursor.fetchall()
    return _read_rows(rows, group, columns)


def experiment_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
    strategy: str | None = None,
) -> ExperimentAggregates:
    """The exposure counts and every metric's per-variant sufficient statistics, in one
    statement per METRICS_PER_QUERY metrics (the counts come with the first). Variants without
    analysed units are absent from a metric's ``stats``.

    Bad stored data must not take every metric down with it: when a statement fails with an
    error of the data or the SQL (e.g. PostgreSQL's "value out of range: overflow" from an
    event value of 1e308 stored before ingestion bounded values), each of its metrics is
    retried alone, each in a savepoint, and a metric that still fails (or whose sums are not
    finite, SQLite's way of overflowing) is left out of ``metrics`` and given a reason in
    ``errors``. Errors of the database itself (unreachable, timed out) are raised."""
    if not metrics:
        return ExperimentAggregates(exposure_counts(experiment_id, since, through), {})
    strategy = strategy or read_strategy()
    window = {
        "experiment_id": experiment_id,
        "project_id": project_id,
        "since": since,
        "through": through,
        "strategy": strategy,
    }
    counts: ExposureCounts | None = None
    out: dict[str, MetricAggregate] = {}
    errors: dict[str, str] = {}
    for start in range(0, len(metrics), METRICS_PER_QUERY):
        group = list(metrics[start : start + METRICS_PER_QUERY])
        try:
            results = [_group_rows(group, **window)]
        except DatabaseError as exc:
            if not _is_per_metric(exc):
                raise
            logger.warning(
                "experiment %s: the statement for %d metric(s) failed (%s); retrying one by one",
                experiment_id,
                len(group),
                exc,
            )
            results = []
            for metric in group if len(group) > 1 else []:
                try:
                    results.append(_group_rows([metric], **window))
                except DatabaseError as one:
                    if not _is_per_metric(one):
                        raise
                    errors[metric.key] = _reason(one)
            if len(group) == 1:
                errors[group[0].key] = _reason(exc)
        for group_counts, aggregates in results:
            counts = counts or group_counts
            out.update(aggregates)
    for key, aggregate in list(out.items()):
        if not _finite(aggregate):
            del out[key]
            errors[key] = OVERFLOW_REASON
    for key, reason in errors.items():
        logger.warning("experiment %s: metric '%s' not computed: %s", experiment_id, key, reason)
    if counts is None:  # every metric failed
        counts = exposure_counts(experiment_id, since, through)
    return ExperimentAggregates(counts, out, errors)


def metric_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
    strategy: str | None = None,
) -> dict[str, MetricAggregate]:
    """Per-variant sufficient statistics of every metric, keyed by metric key then variant id."""
    return experiment_aggregates(
        experiment_id=experiment_id,
        project_id=project_id,
        metrics=metrics,
        since=since,
        through=through,
        strategy=strategy,
    ).metrics
