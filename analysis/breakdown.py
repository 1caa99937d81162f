"""Dimension breakdowns: an experiment's results per level of a unit attribute (country,
platform, new or returning...) sent with its exposures, with the breakdown's own correction for
its many comparisons and a test of whether the effect differs between levels.

Computed when a person asks (results page, API, export), at the cut-off of the latest snapshot
of the current phase (so the levels add up to the results shown), or now before the first one:
the SQL runs in one consistent read with its own statement timeout
(``ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS``), and the answer is cached per (snapshot, dimension)
for ``CACHE_SECONDS``. What counts (the level of a unit, the cap on levels) is in
``analysis.breakdown_aggregation.breakdown_aggregates``; the statistics are ``stats.breakdown``
(docs/analysts.md and docs/statistics.md, "Dimension breakdowns").
"""

import hashlib
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.utils import timezone

from analysis import aggregation, breakdown_aggregation
from analysis.breakdown_aggregation import BREAKDOWN_LEVELS, Breakdown, LevelAggregates
from analysis.compute import _consistent_read, _metric_spec
from analysis.persist import result_row
from analysis.policy import LOOK, Comparison, MetricDef
from analysis.results import LATEST_FIRST, row_json
from assignments.models import Exposure
from core.errors import DomainError
from experiments.models import Experiment, ExperimentMetric
from stats import SampleStats
from stats.breakdown import (
    EMPTY,
    HETEROGENEITY_CORRECTION,
    LEVELS_CORRECTION,
    BreakdownAnalysis,
    BreakdownMetric,
    analyze_breakdown,
)

logger = logging.getLogger(__name__)

MAX_DIMENSION_LENGTH = 100
MAX_BREAKDOWN_LEVELS = 50  # the most levels a request may keep (each costs a column of tests)
ATTRIBUTE_SAMPLE = 10_000  # exposures whose attribute names the picker lists
CACHE_SECONDS = 300
LEVEL_LABELS = {"other": "(other)", "none": "(none)"}


class BreakdownTooSlow(Exception):
    """The breakdown's SQL ran past ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS."""


def check_dimension(dimension: Any) -> str:
    """The attribute name to break down by, or a DomainError naming ``dimension``."""
    if not isinstance(dimension, str) or not dimension.strip():
        raise DomainError(
            "'dimension' is required: the name of a unit attribute sent with exposures "
            '("attributes": {"country": "DE"}), e.g. ?dimension=country.',
            field="dimension",
        )
    if len(dimension) > MAX_DIMENSION_LENGTH:
        raise DomainError(
            f"'dimension' is longer than {MAX_DIMENSION_LENGTH} characters.", field="dimension"
        )
    if any(c in dimension for c in '"\\') or not dimension.isprintable():
        raise DomainError(
            "'dimension' must not contain quotes, backslashes or control characters.",
            field="dimension",
        )
    return dimension


def attributes_seen(experiment: Experiment) -> list[str]:
    """The names of the scalar attributes on the current phase's exposures, sorted: the
    dimensions a person may pick. Reads ATTRIBUTE_SAMPLE exposures at most (in the index's
    order, whether they carry attributes or not), so a page costs the same at any size."""
    sample = (
        Exposure.objects.filter(
            project_id=experiment.project_id, experiment=experiment, ts__gte=_since(experiment)
        )
        .order_by()
        .values_list("attributes", flat=True)[:ATTRIBUTE_SAMPLE]
    )
    names: set[str] = set()
    for attributes in sample:
        if isinstance(attributes, dict):
            names.update(k for k, v in attributes.items() if not isinstance(v, dict | list))
    return sorted(names)


def _since(experiment: Experiment) -> datetime:
    return experiment.phase_started_at or experiment.started_at or experiment.created_at


def _cutoff(experiment: Experiment) -> tuple[datetime, int | None]:
    """(cut-off, snapshot id): the latest snapshot of the phase, else now (or the end)."""
    snapshot = (
        experiment.snapshots.filter(phase=experiment.phase)
        .order_by(*LATEST_FIRST)
        .only("pk", "data_through")
        .first()
    )
    if snapshot is not None:
        return snapshot.data_through, snapshot.pk
    now = timezone.now()
    ended = experiment.ended_at
    return (ended if ended is not None and ended < now else now), None


def experiment_breakdown(
    experiment: Experiment, dimension: Any, *, levels: int = BREAKDOWN_LEVELS
) -> dict[str, Any]:
    """The breakdown of ``experiment`` by the exposure attribute ``dimension`` as JSON:
    ``{"dimension", "levels": [{"value", "kind", "units", "metrics": [rows as in results]}],
    "heterogeneity": [{"metric", "variant", "p_value", ...}], "note", ...}``."""
    dimension = check_dimension(dimension)
    through, snapshot_id = _cutoff(experiment)
    name = hashlib.sha256(dimension.encode()).hexdigest()[:24]
    key = f"breakdown:{experiment.pk}:{snapshot_id}:{through.isoformat()}:{levels}:{name}"
    if snapshot_id is not None:
        cached = _cache_get(key)
        if cached is not None:
            return cached
    ems = list(experiment.experiment_metrics.select_related("metric").order_by("id"))
    result = _aggregate(experiment, ems, through, Breakdown(dimension, levels))
    data = _breakdown_json(experiment, ems, result, dimension, levels, through, snapshot_id)
    if snapshot_id is not None:
        _cache_set(key, data)
    return data


def _aggregate(
    experiment: Experiment, ems: list[ExperimentMetric], through: datetime, breakdown: Breakdown
) -> breakdown_aggregation.BreakdownAggregates:
    try:
        with _consistent_read():
            _limit_statements()
            return breakdown_aggregation.breakdown_aggregates(
                experiment_id=experiment.pk,
                project_id=experiment.project_id,
                metrics=[_metric_spec(em) for em in ems],
                since=_since(experiment),
                through=through,
                breakdown=breakdown,
            )
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "57014":  # query_canceled: the timeout
            raise BreakdownTooSlow(
                f"The breakdown by '{breakdown.dimension}' took longer than "
                f"{settings.ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS / 1000:g} s; export it "
                "(manage.py export_results --dimension) or raise "
                "ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS."
            ) from exc
        raise


def _limit_statements() -> None:
    """Inside the consistent read: the breakdown's own statement timeout (PostgreSQL)."""
    connection = aggregation.current_dialect().connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)",
                [str(int(settings.ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS))],
            )


def _cache_get(key: str) -> dict[str, Any] | None:
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage only costs a recomputation
        logger.warning("breakdown cache unavailable", exc_info=True)
        return None


def _cache_set(key: str, data: dict[str, Any]) -> None:
    try:
        cache.set(key, data, CACHE_SECONDS)
    except Exception:  # noqa: BLE001
        logger.warning("breakdown cache unavailable", exc_info=True)


# --- the JSON -----------------------------------------------------------------------------------


def _level_stats(
    level: LevelAggregates, variant_keys: dict[int, str]
) -> dict[str, dict[str, SampleStats]]:
    return {
        key: {variant_keys[pk]: s for pk, s in agg.stats.items() if pk in variant_keys}
        for key, agg in level.metrics.items()
    }


def _note(analysis: BreakdownAnalysis, dimension: str, levels: int) -> str:
    rejected = analysis.rejected
    return (
        f"Exploratory: fixed-horizon tests at alpha {analysis.alpha:g}, one per level, metric "
        f"and treatment arm ({analysis.tests} tests). P-values are Benjamini-Hochberg adjusted "
        f"over those {analysis.tests} (false discovery rate {analysis.alpha:g}); "
        f"{rejected} {'is' if rejected == 1 else 'are'} significant, and intervals are at the "
        f"false-coverage-rate level {analysis.interval_alpha:.3g} (alpha x {rejected} / "
        f"{analysis.tests}). The effect's difference between levels is Cochran's Q per metric "
        f"and arm, Holm-adjusted over the {len(analysis.heterogeneity)} tests. Units count in "
        f"the level of '{dimension}' on their first exposure; the {levels} most common values "
        "are levels of their own. Decide on the overall results, not on a level."
    )


def _level_json(
    level: LevelAggregates,
    ems: list[ExperimentMetric],
    analysis: BreakdownAnalysis,
    index: int,
    control: str,
    variant_keys: dict[int, str],
    stats: dict[str, dict[str, SampleStats]],
) -> dict[str, Any]:
    by_key = {em.metric.key: em for em in ems}
    rows = []
    for em in ems:
        if em.metric.key not in level.metrics:
            continue
        by_arm = stats.get(em.metric.key, {})
        caps = level.metrics[em.metric.key].caps
        control_row = result_row(em, control, by_arm.get(control, EMPTY), None, caps)
        for comp in analysis.comparisons:
            if comp.level != index or comp.metric.key != em.metric.key:
                continue
            metric = by_key[comp.metric.key].metric
            comparison = Comparison(
                MetricDef(
                    metric.key,
                    metric.kind,
                    by_key[comp.metric.key].role,
                    metric.direction,
                    None,
                    metric.cuped,
                    metric.name,
                ),
                comp.variant,
                comp.result,
                comp.config,
                adjusted_p=comp.adjusted_p_value,
                error=comp.result.error,
            )
            row = result_row(
                em, comp.variant, by_arm.get(comp.variant, EMPTY), comparison, caps, LOOK
            )
            rows.append(
                {
                    **row_json(row, control_row),
                    # The sufficient statistics of both arms: every number can be re-derived.
                    "control_stats": asdict(by_arm.get(control, EMPTY)),
                    "variant_stats": asdict(by_arm.get(comp.variant, EMPTY)),
                }
            )
    kind = level.level.kind
    return {
        "value": level.level.value if kind == "value" else LEVEL_LABELS[kind],
        "kind": kind,
        "units": level.counts.units,
        "units_by_variant": {
            variant_keys[pk]: n
            for pk, n in level.counts.units_by_variant.items()
            if pk in variant_keys
        },
        "metrics": rows,
    }


def _breakdown_json(
    experiment: Experiment,
    ems: list[ExperimentMetric],
    result: breakdown_aggregation.BreakdownAggregates,
    dimension: str,
    levels: int,
    through: datetime,
    snapshot_id: int | None,
) -> dict[str, Any]:
    variants = list(experiment.variants.all())
    variant_keys = {v.pk: v.key for v in variants}
    control = next(v.key for v in variants if v.is_control)
    treatments = [v.key for v in variants if not v.is_control]
    computed = [em for em in ems if em.metric.key not in result.errors]
    metrics = [
        BreakdownMetric(em.metric.key, em.metric.kind, em.metric.cuped, em.metric.direction)
        for em in computed
    ]
    stats = [_level_stats(level, variant_keys) for level in result.levels]
    analysis = analyze_breakdown(stats, metrics, control, treatments, alpha=experiment.alpha)
    return {
        "experiment": experiment.key,
        "dimension": dimension,
        "data_through": through.isoformat(),
        "snapshot_id": snapshot_id,
        "phase": experiment.phase,
        "method": "fixed",
        "exploratory": True,
        "max_levels": levels,
        "levels": [
            _level_json(level, computed, analysis, i, control, variant_keys, stats[i])
            for i, level in enumerate(result.levels)
        ],
        "heterogeneity": [
            {
                "metric": t.metric,
                "variant": t.variant,
                "p_value": t.test.p_value,
                "adjusted_p_value": t.adjusted_p_value,
                "significant": t.adjusted_p_value is not None
                and t.adjusted_p_value < experiment.alpha,
                "q": t.test.q,
                "df": t.test.df,
                "levels": t.test.levels,
                "i_squared": t.test.i_squared,
            }
            for t in analysis.heterogeneity
        ],
        "correction": {
            "levels": LEVELS_CORRECTION,
            "heterogeneity": HETEROGENEITY_CORRECTION,
            "alpha": analysis.alpha,
            "tests": analysis.tests,
            "rejected": analysis.rejected,
            "interval_alpha": analysis.interval_alpha,
        },
        "note": _note(analysis, dimension, levels),
        "metric_errors": dict(result.errors),
    }
