"""The holdout's long-term comparison: everyone else (the "general" sample) against the
holdout, on every metric of the project, over the holdout's lifetime (docs/analysts.md
"Holdouts"; the statistics in docs/statistics.md).

Units: the holdout's exposures (``assignments.HoldoutExposure``): each unit of the holdout, and
of an equal-sized sample of everyone else, that a serving path saw while the holdout ran, from
the first time it was seen (t0). Metric value per unit: the metric's events from t0 to the
cut-off (the metric's conversion window does not apply: the holdout measures what lasts), as the
experiment aggregation computes it (`analysis.aggregation`, the same SQL with the holdout's
exposures as the units), without CUPED (a unit's events before t0 may already follow a shipped
change). Arms: the holdout is the control; the lift is the general sample's over it, i.e. the
effect of everything shipped while the holdout ran.

Statistics (`stats.analyze_metric`): the confidence sequence (method ``sequential``), whose
intervals and p-values stay valid however often the comparison is looked at, which a
holdout that runs for months is; tuned at ``TUNING_N`` units. Benjamini-Hochberg adjusted
p-values across the metrics; the always-valid sample ratio test (`stats.srm_test`) checks the
two arms are as large as they must be (1:1).
"""

import math
from dataclasses import replace
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from analysis import aggregation
from analysis.compute import metric_spec
from analysis.models import HoldoutSnapshot
from analysis.sql.builders import HOLDOUT_EXPOSURES, units_from
from experiments.models import Holdout, Metric
from stats import AnalysisConfig, MetricResult, SampleStats, analyze_metric, sequential, srm_test
from stats.multiple_testing import benjamini_hochberg

ALPHA = 0.05
# Total units at which the confidence sequence is tightest, fixed for the holdout's life: the
# engine's default, whose interval is within 2x the fixed-horizon one from 600 to 5 million
# units (docs/statistics.md, confidence sequences).
TUNING_N = sequential.DEFAULT_TUNING_N
METHOD = "sequential"
HOLDOUT_ARM, GENERAL_ARM = 0, 1  # assignments.HoldoutArm
UNSUPPORTED_KINDS = {"quantile": "quantile metrics have no per-unit value to compare"}
_EMPTY = SampleStats(n=0, sum=0.0, sum_sq=0.0)


def holdout_window(holdout: Holdout, through: datetime | None = None) -> tuple[datetime, datetime]:
    """``(since, cut-off)``: from the start to ``through`` (now), at most to the end."""
    if holdout.started_at is None:
        raise ValueError("the holdout has not started: nothing to compare")
    cutoff = through or timezone.now()
    if holdout.ended_at is not None:
        cutoff = min(cutoff, holdout.ended_at)
    return holdout.started_at, max(cutoff, holdout.started_at)


def _lifetime_hours(since: datetime, through: datetime) -> int:
    """A window that reaches past the cut-off from any t0 in [since, through]."""
    return max(1, math.ceil((through - since) / timedelta(hours=1)) + 1)


def _status(result: MetricResult) -> str:
    if result.error:
        return "error"
    if result.improved:
        return "better"
    return "worse" if result.harmed else "neutral"


def _row(metric: Metric, result: MetricResult | None, error: str | None) -> dict[str, object]:
    row: dict[str, object] = {
        "metric": metric.key,
        "name": metric.name,
        "kind": metric.kind,
        "direction": metric.direction,
    }
    if result is None:
        return {**row, "status": "error", "error": error, "holdout_n": 0, "general_n": 0}
    return {
        **row,
        "holdout_n": result.control_n,
        "general_n": result.variant_n,
        "holdout_mean": result.control_mean,
        "general_mean": result.variant_mean,
        "lift_abs": result.lift_abs,
        "lift_rel": result.lift_rel,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "ci_abs_low": result.ci_abs_low,
        "ci_abs_high": result.ci_abs_high,
        "p_value": result.p_value,
        "fixed_ci_low": result.fixed_ci_low,
        "fixed_ci_high": result.fixed_ci_high,
        "fixed_p_value": result.fixed_p_value,
        "status": _status(result),
        "message": result.message,
        "error": result.error,
    }


def holdout_compare(holdout: Holdout, through: datetime) -> dict[str, object]:
    """The comparison at the cut-off (``holdout_window``): units per arm, the sample ratio
    test, one row per project metric (ordered by key), and warnings. Reads the database."""
    since, cutoff = holdout_window(holdout, through)
    hours = _lifetime_hours(since, cutoff)
    metrics = list(Metric.objects.filter(project_id=holdout.project_id).order_by("key"))
    compared = [m for m in metrics if m.kind not in UNSUPPORTED_KINDS]
    specs = [replace(metric_spec(m), window_hours=hours, cuped=False) for m in compared]
    with transaction.atomic(), units_from(HOLDOUT_EXPOSURES):
        aggregates = aggregation.experiment_aggregates(
            experiment_id=holdout.pk,
            project_id=holdout.project_id,
            metrics=specs,
            since=since,
            through=cutoff,
        )
    units = aggregates.counts.units_by_variant
    n_holdout, n_general = units.get(HOLDOUT_ARM, 0), units.get(GENERAL_ARM, 0)
    rows: dict[str, dict[str, object]] = {}
    for metric in metrics:
        if metric.kind in UNSUPPORTED_KINDS:
            rows[metric.key] = _row(metric, None, UNSUPPORTED_KINDS[metric.kind])
            continue
        if metric.key in aggregates.errors:
            rows[metric.key] = _row(metric, None, aggregates.errors[metric.key])
            continue
        stats = aggregates.metrics[metric.key].stats
        config = AnalysisConfig(
            kind=metric.kind,
            alpha=ALPHA,
            method=METHOD,
            tuning_n=TUNING_N,
            direction=metric.direction,
        )
        result = analyze_metric(
            stats.get(HOLDOUT_ARM, _EMPTY), stats.get(GENERAL_ARM, _EMPTY), config
        )
        rows[metric.key] = _row(metric, result, None)
    keys = list(rows)
    adjusted = benjamini_hochberg([rows[k].get("p_value") for k in keys])  # type: ignore[misc]
    for key, value in zip(keys, adjusted, strict=True):
        rows[key]["adjusted_p_value"] = value
    srm = srm_test([n_holdout, n_general], [0.5, 0.5])
    warnings = []
    if n_holdout + n_general == 0:
        warnings.append("No units yet: no serving path has seen a unit of either arm.")
    if srm.flagged:
        warnings.append(
            f"Sample ratio mismatch: {n_holdout} holdout and {n_general} general units where "
            f"the two should be equal (p = {srm.p_value:.2g}). A serving path may be missing "
            "the holdout (an SDK or a cached payload from before it started)."
        )
    return {
        "since": since,
        "through": cutoff,
        "units": {"holdout": n_holdout, "general": n_general},
        "srm_p_value": srm.p_value,
        "metrics": list(rows.values()),
        "warnings": warnings,
    }


@transaction.atomic
def holdout_analyze(*, holdout_id: int, through: datetime | None = None) -> HoldoutSnapshot:
    """Compute and store the comparison at ``through`` (now); idempotent per cut-off (a second
    run at the same cut-off returns the stored snapshot)."""
    holdout = Holdout.objects.select_related("project").get(pk=holdout_id)
    _, cutoff = holdout_window(holdout, through)
    stored = HoldoutSnapshot.objects.filter(holdout=holdout, data_through=cutoff).first()
    if stored is not None:
        return stored
    comparison = holdout_compare(holdout, cutoff)
    snapshot, _ = HoldoutSnapshot.objects.get_or_create(
        holdout=holdout,
        data_through=cutoff,
        defaults={
            "computed_at": timezone.now(),
            "method": METHOD,
            "units": comparison["units"],
            "srm_p_value": comparison["srm_p_value"],
            "metrics": comparison["metrics"],
            "warnings": comparison["warnings"],
        },
    )
    return snapshot
