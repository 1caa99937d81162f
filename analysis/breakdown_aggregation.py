"""Results per level of one exposure attribute: the metrics statement of analysis/aggregation.py
with each unit's level (its docstring's "Breakdowns"), read into per-level aggregates; the
statistics are ``stats.breakdown``'s and the API analysis/breakdown.py's."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from analysis.aggregation import (
    OVERFLOW_REASON,
    ExposureCounts,
    MetricAggregate,
    MetricSpec,
    counts_of,
    current_dialect,
    group_statement,
    is_finite,
    project_of,
    read_rows,
    read_strategy,
    run_by_group,
)
from analysis.sql import builders
from analysis.sql.dialects import Dialect

BREAKDOWN_LEVELS = 20  # values kept per dimension, the most common; the rest are one level


@dataclass(frozen=True)
class Breakdown:
    """Results per level of the exposure attribute ``dimension``: its ``levels`` values with
    the most analysed units, one level for every other value, one for units without one."""

    dimension: str
    levels: int = BREAKDOWN_LEVELS


@dataclass(frozen=True)
class Level:
    kind: str  # "value" (one of the kept values) | "other" (any other value) | "none"
    value: str | None = None  # the attribute's value, for kind "value"


_LEVEL_KINDS = {builders.LEVEL_VALUE: "value", builders.LEVEL_OTHER: "other"}


@dataclass(frozen=True)
class LevelAggregates:
    level: Level
    counts: ExposureCounts
    metrics: dict[str, MetricAggregate]  # by metric key, as in ExperimentAggregates


@dataclass(frozen=True)
class BreakdownAggregates:
    """The levels with analysed units: kept values by units (most first, ties by the value's
    code points), then "other", then "none"."""

    levels: list[LevelAggregates]
    errors: dict[str, str] = field(default_factory=dict)  # metric key -> why it failed


def by_level(rows: Sequence[Sequence[object]]) -> dict[Level, list[Sequence[object]]]:
    """(bucket, kept value, variant id, state, ...) rows -> the rest of each row, by level."""
    out: dict[Level, list[Sequence[object]]] = {}
    for row in rows:
        level = Level(_LEVEL_KINDS.get(int(row[0]), "none"), row[1])  # type: ignore[arg-type]
        out.setdefault(level, []).append(row[2:])
    return out


def level_order(level: Level, units: int) -> tuple:
    return ({"value": 0, "other": 1, "none": 2}[level.kind], -units, level.value or "")


def breakdown_counts(
    experiment_id: int, since: datetime, through: datetime, breakdown: Breakdown, d: Dialect
) -> dict[Level, ExposureCounts]:
    params = {
        "experiment": experiment_id,
        "project": project_of(experiment_id, d),
        "since": d.param_ts(since),
        "through": d.param_ts(through),
        "dimension": d.param_property(breakdown.dimension),
    }
    with d.connection.cursor() as cursor:
        cursor.execute(builders.breakdown_counts_sql(d, breakdown.levels), params)
        rows = cursor.fetchall()
    return {level: counts_of(level_rows) for level, level_rows in by_level(rows).items()}  # type: ignore[arg-type]


def breakdown_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
    breakdown: Breakdown,
    strategy: str | None = None,
) -> BreakdownAggregates:
    """``experiment_aggregates`` per level of ``breakdown.dimension``: each analysed unit counts
    in the level of the attribute on its first exposure in the window (``builders.exposed_cte``)
    with the same per-unit values as in the experiment's results (winsorized at the caps of all
    units). Failing metrics are retried and reported as ``experiment_aggregates`` does."""
    dialect = current_dialect()
    counts: dict[Level, ExposureCounts] = {}
    stats: dict[Level, dict[str, MetricAggregate]] = {}
    errors: dict[str, str] = {}
    if metrics:
        window = {
            "experiment_id": experiment_id,
            "project_id": project_id,
            "since": since,
            "through": through,
            "strategy": strategy or read_strategy(),
            "dialect": dialect,
            "breakdown": breakdown,
        }

        def run(group: list[MetricSpec]) -> dict[Level, tuple]:
            rows, columns = group_statement(group, **window)  # type: ignore[arg-type]
            return {
                level: read_rows(level_rows, group, columns)
                for level, level_rows in by_level(rows).items()
            }

        results, errors = run_by_group(metrics, run, experiment_id=experiment_id, dialect=dialect)
        for per_level in results:
            for level, (level_counts, aggregates) in per_level.items():
                counts.setdefault(level, level_counts)
                stats.setdefault(level, {}).update(aggregates)
        overflowing = {k for aggs in stats.values() for k, a in aggs.items() if not is_finite(a)}
        for key in overflowing:
            errors[key] = OVERFLOW_REASON
            for aggregates in stats.values():
                aggregates.pop(key, None)
    if not counts:  # no metrics, or every metric failed
        counts = breakdown_counts(experiment_id, since, through, breakdown, dialect)
    levels = sorted(
        (level for level, c in counts.items() if c.units > 0),
        key=lambda level: level_order(level, counts[level].units),
    )
    return BreakdownAggregates(
        [LevelAggregates(level, counts[level], stats.get(level, {})) for level in levels], errors
    )
