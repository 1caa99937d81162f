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
Units without events count with 0. A metric with ``filters`` counts only its events whose
``properties`` pass every filter, and one with ``value_property`` takes that property's number
as the event's value: an event without it, or with a non-number there, adds nothing (as if its
value were 0 in a mean or a ratio's numerator); the rules of each operator are in
experiments/filters.py. Neither applies to a ratio's denominator event. Events before t0 never
count toward the metric; those with
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
``stats.winsor_cap`` on the per-unit values.

Per variant (and unit state) the statement returns n, sum, sum_sq and, for ratio and CUPED,
den_sum, den_sum_sq, sum_prod, cov_sum, cov_sum_sq, cov_sum_prod: a few small rows.

Breakdowns (analysis/breakdown_aggregation.py): the same statement, with each unit's level, the
value of one exposure attribute (bound as a parameter) on the unit's first exposure in the
window, as a string's text, a number's JSON text or true/false (NULL when missing, null, an
object or a list); the same sums per (level, variant). The ``levels`` values with the most
analysed units are kept (ties by the value's bytes), every other value is one level ("other"),
units without a value another ("none"). Per-unit values and winsorization caps are those of the
results.

The statement is built from named CTEs: ``exposed`` (one row per unit: variant, state, t0 and
window bounds), ``per_unit`` (one row per unit: its metric columns), ``caps`` and ``capped``
(winsorization), then the per-variant sums. ``per_unit`` reads events in one of two ways (see
``read_strategy``): a hash join of all units with the project's events (any schema, SQLite
included), or, on PostgreSQL with a covering index, one index-only lookup per unit in unit order.

Where the code is: this module holds the API (specs, results, the per-metric retry);
``analysis/unit_columns.py`` turns metrics into columns; ``analysis/sql/builders.py`` writes the
statement, one function per CTE or clause; ``analysis/sql/dialects.py`` holds every
PostgreSQL/SQLite difference (time arithmetic, quantiles, LEAST, planner fences, index lookups,
parameter adaptation, savepoints, which errors are a metric's fault), one class per engine,
picked from ``connection.vendor`` by ``dialect_for``. Another engine is one more dialect class.
"""

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from django.db import DatabaseError, connections

from analysis.sql import builders
from analysis.sql.builders import CLEAN, HASH_JOIN, INDEX_LOOKUP, MISMATCH, Column, EventColumn
from analysis.sql.dialects import Dialect, dialect_for
from analysis.unit_columns import (
    event_names,
    metric_columns,
    metric_event_columns,
    property_columns,
)
from core.replica import read_alias
from experiments.filters import PropertyFilter
from experiments.models import Experiment
from stats import SampleStats

if TYPE_CHECKING:
    from analysis.breakdown_aggregation import Breakdown

logger = logging.getLogger(__name__)

METRICS_PER_QUERY = 16  # keeps one statement's width and hash-aggregate state bounded
T = TypeVar("T")


@dataclass(frozen=True)
class MetricSpec:
    key: str
    kind: str  # binomial | mean | count | ratio
    event_name: str
    denominator_event: str = ""
    window_hours: int = 72
    winsorize_quantile: float | None = None
    cuped: bool = True
    filters: tuple[PropertyFilter, ...] = ()  # experiments.filters.clean_filters
    value_property: str = ""


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


def current_dialect() -> Dialect:
    """The dialect of the connection the statements run on: the primary's, or the read
    replica's inside ``core.replica.analysis_reads()`` (analysis.compute)."""
    return dialect_for(connections[read_alias()])


# --- exposures --------------------------------------------------------------------------------


def counts_of(rows: Sequence[tuple[int, int, int]]) -> ExposureCounts:
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


def project_of(experiment_id: int, d: Dialect) -> int | None:
    """The experiment's project: every read of the exposures names it (on PostgreSQL the
    planner then reads only that project's partitions)."""
    rows = Experiment.objects.using(d.connection.alias).filter(pk=experiment_id)
    return rows.values_list("project_id", flat=True).first()


def exposure_counts(experiment_id: int, since: datetime, through: datetime) -> ExposureCounts:
    """Analysed units per variant in the window, and the multi-variant units left out.

    (experiment_aggregates returns the same counts from its metrics query.)"""
    d = current_dialect()
    params = {
        "experiment": experiment_id,
        "project": project_of(experiment_id, d),
        "since": d.param_ts(since),
        "through": d.param_ts(through),
    }
    with d.connection.cursor() as cursor:
        cursor.execute(builders.exposure_counts_sql(d), params)
        return counts_of(cursor.fetchall())


# --- how to read each unit's events -----------------------------------------------------------

COVERING_INDEX = ("project_id", "unit_id", "ts")  # leading columns; must also hold name, value


def read_strategy() -> str:
    """How the metrics statement reads events: INDEX_LOOKUP when PostgreSQL has an index on
    assignments_metricevent (project_id, unit_id, ts) that also holds name and value (e.g.
    ``INCLUDE (name, value)``), else HASH_JOIN.

    At 10M events the index lookups take less than half the time of the hash join: the units
    are visited in unit_id order, so the lookups walk the index sequentially, and no hash table
    of a million units is probed at random. Without such an index the lookups would fetch every
    event's value from the table at random, several times slower than the hash join."""
    d = current_dialect()
    if not d.supports_index_lookup:
        return HASH_JOIN
    with d.connection.cursor() as cursor:
        for columns in d.index_columns(cursor, "assignments_metricevent"):
            if tuple(columns[:3]) == COVERING_INDEX and {"name", "value"} <= set(columns):
                return INDEX_LOOKUP
    return HASH_JOIN


# --- metrics ----------------------------------------------------------------------------------


def metrics_sql(
    metrics: Sequence[MetricSpec],
    columns: list[dict[str, Column]],
    names: list[str],
    strategy: str = HASH_JOIN,
    dialect: Dialect | None = None,
    properties: Sequence[EventColumn] = (),
    levels: int | None = None,
    unindexed: bool = True,
) -> str:
    """The statement for a group of metrics (``metric_columns`` of each, ``event_names`` of all,
    ``metric_event_columns`` of their properties; ``levels``: a breakdown's, ``unindexed``: see
    ``builders.metrics_statement``)."""
    windows = sorted({int(m.window_hours) for m in metrics})
    return builders.metrics_statement(
        dialect or current_dialect(),
        windows,
        columns,
        len(names),
        strategy,
        properties,
        levels,
        unindexed=unindexed,
    )


def read_rows(
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
    counts = counts_of([(int(r[0]), int(r[1]), int(r[2])) for r in rows])  # type: ignore[arg-type]
    return counts, {m.key: MetricAggregate(stats[m.key], caps[m.key]) for m in metrics}


@dataclass(frozen=True)
class ExperimentAggregates:
    counts: ExposureCounts
    metrics: dict[str, MetricAggregate]  # by metric key; a metric in ``errors`` is absent
    errors: dict[str, str] = field(default_factory=dict)  # metric key -> why it failed


OVERFLOW_REASON = (
    "the sums overflow: an event value is too large; delete or exclude it (docs/operations.md)"
)


def failure_reason(exc: BaseException) -> str:
    """A short reason for a metric that cannot be computed, a person can act on."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "out of range" in message.lower() or "overflow" in message.lower():
        return OVERFLOW_REASON
    return f"the aggregation failed ({type(exc).__name__}: {message[:200]})"


def is_finite(aggregate: MetricAggregate) -> bool:
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


def group_statement(
    group: Sequence[MetricSpec],
    *,
    experiment_id: int,
    project_id: int,
    since: datetime,
    through: datetime,
    strategy: str,
    dialect: Dialect,
    breakdown: "Breakdown | None" = None,
) -> tuple[list[tuple], list[dict[str, Column]]]:
    """One statement for ``group``, in the dialect's statement scope (a savepoint on
    PostgreSQL, which aborts a transaction on any failed statement): a failure leaves the
    caller's transaction usable. Its rows, and the metrics' columns that read them."""
    names = event_names(group)
    codes = {name: i for i, name in enumerate(names)}
    aliases = property_columns(group, codes)
    columns = [metric_columns(i, m, codes, aliases) for i, m in enumerate(group)]
    properties, property_params = metric_event_columns(aliases, dialect)
    longest = max(int(m.window_hours) for m in group)
    params: dict[str, object] = {
        "experiment": experiment_id,
        "project": project_id,
        "since": dialect.param_ts(since),
        "through": dialect.param_ts(through),
        "earliest": dialect.param_ts(since - timedelta(hours=longest)),
        **{f"name{i}": name for i, name in enumerate(names)},
        **property_params,
    }
    if breakdown is not None:
        params["dimension"] = dialect.param_property(breakdown.dimension)
    unindexed = False
    if properties and strategy == INDEX_LOOKUP:
        with dialect.connection.cursor() as cursor:
            unindexed = dialect.unindexed_properties(cursor, project_id)
    sql = metrics_sql(
        group,
        columns,
        names,
        strategy,
        dialect=dialect,
        properties=properties,
        levels=breakdown.levels if breakdown is not None else None,
        unindexed=unindexed,
    )
    with dialect.statement_scope(), dialect.connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return rows, columns


def _group_rows(
    group: Sequence[MetricSpec], **window: object
) -> tuple[ExposureCounts, dict[str, MetricAggregate]]:
    """The counts and the metrics' statistics from one statement for ``group``."""
    rows, columns = group_statement(group, **window)  # type: ignore[arg-type]
    return read_rows(rows, group, columns)


def run_by_group(
    metrics: Sequence[MetricSpec],
    run: Callable[[list[MetricSpec]], T],
    *,
    experiment_id: int,
    dialect: Dialect,
) -> tuple[list[T], dict[str, str]]:
    """``run`` over the metrics, METRICS_PER_QUERY at a time; a group whose statement fails by
    the data's or the SQL's fault (``Dialect.is_per_metric_failure``) is retried metric by
    metric, and a metric that still fails gets a reason. Database failures are raised."""
    results: list[T] = []
    errors: dict[str, str] = {}
    for start in range(0, len(metrics), METRICS_PER_QUERY):
        group = list(metrics[start : start + METRICS_PER_QUERY])
        try:
            results.append(run(group))
        except DatabaseError as exc:
            if not dialect.is_per_metric_failure(exc):
                raise
            logger.warning(
                "experiment %s: the statement for %d metric(s) failed (%s); retrying one by one",
                experiment_id,
                len(group),
                exc,
            )
            for metric in group if len(group) > 1 else []:
                try:
                    results.append(run([metric]))
                except DatabaseError as one:
                    if not dialect.is_per_metric_failure(one):
                        raise
                    errors[metric.key] = failure_reason(one)
            if len(group) == 1:
                errors[group[0].key] = failure_reason(exc)
    return results, errors


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
    dialect = current_dialect()
    window = {
        "experiment_id": experiment_id,
        "project_id": project_id,
        "since": since,
        "through": through,
        "strategy": strategy,
        "dialect": dialect,
    }
    counts: ExposureCounts | None = None
    out: dict[str, MetricAggregate] = {}
    results, errors = run_by_group(
        metrics,
        lambda group: _group_rows(group, **window),
        experiment_id=experiment_id,
        dialect=dialect,
    )
    for group_counts, aggregates in results:
        counts = counts or group_counts
        out.update(aggregates)
    for key, aggregate in list(out.items()):
        if not is_finite(aggregate):
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
