"""The time views of an experiment: the lift on each day's data and the novelty check, computed
by the analysis run and stored (``TimeView``), and read by the API and the dashboard.

They decide nothing: every interval is fixed-horizon at the experiment's alpha, uncorrected for
the number of days (exploratory), and the novelty flag is a Holm-controlled test over the
experiment's metrics x treatment arms (``stats.time_views``).

Why in the worker and stored: the statement reads events (about 1.7 s for 1M events on
PostgreSQL with the covering index, 3.5 s without; docs/benchmarks.md), and the web process
never computes statistics. A run refreshes the view when it is missing, of another phase, at the
final analysis, or when the stored one's cut-off is ``ABACUS_TIME_VIEWS_INTERVAL`` seconds
(default 3600) older than the new snapshot's: at most one statement an hour per experiment,
whatever the analysis interval. Day-level views do not need minute-level freshness.
"""

import logging
import time
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from analysis.compute import CutoffEvaluation, _consistent_read, _metric_spec
from analysis.models import LookKind, ResultSnapshot, TimeView
from analysis.time_aggregation import MAX_CALENDAR_DAYS, MAX_EXPOSURE_DAYS, time_aggregates
from experiments.models import Experiment
from stats import SampleStats
from stats.time_views import MIN_DAYS, day_effect, novelty_flags, novelty_trend

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 3600  # seconds of data between two refreshes
EMPTY = SampleStats(n=0, sum=0.0, sum_sq=0.0)
EFFECT_FIELDS = (
    "control_n",
    "variant_n",
    "control_mean",
    "variant_mean",
    "lift_abs",
    "abs_ci_low",
    "abs_ci_high",
    "lift_rel",
    "ci_low",
    "ci_high",
    "p_value",
)


def time_views_due(existing: TimeView | None, snapshot: ResultSnapshot) -> bool:
    """Whether a run that stored ``snapshot`` should recompute the stored views."""
    if existing is None or existing.phase != snapshot.phase:
        return True
    if snapshot.data_through < existing.data_through:
        return False  # a backfill of an earlier cut-off: the stored views are newer
    if snapshot.look_kind == LookKind.FINAL and existing.data_through < snapshot.data_through:
        return True
    interval = float(getattr(settings, "ABACUS_TIME_VIEWS_INTERVAL", DEFAULT_INTERVAL))
    return snapshot.data_through - existing.data_through >= timedelta(seconds=interval)


def time_views_refresh(
    *, experiment: Experiment, snapshot: ResultSnapshot, cut: CutoffEvaluation
) -> TimeView | None:
    """Recompute and store the experiment's time views with the snapshot's cut-off when they
    are due (``time_views_due``). Runs after the snapshot is committed; a failure is logged and
    leaves the snapshot and the previous views as they were (it never fails the run)."""
    existing = TimeView.objects.filter(experiment=experiment).only("phase", "data_through").first()
    if not time_views_due(existing, snapshot):
        return existing
    try:
        fields = time_views_compute(experiment=experiment, cut=cut)
        view, _ = TimeView.objects.update_or_create(
            experiment=experiment,
            defaults={
                "snapshot": snapshot,
                "phase": snapshot.phase,
                "computed_at": timezone.now(),
                **fields,
            },
        )
    except Exception:
        logger.exception("experiment %s: the time views could not be computed", experiment.pk)
        return existing
    return view


def time_views_compute(*, experiment: Experiment, cut: CutoffEvaluation) -> dict[str, Any]:
    """The ``TimeView`` fields for the cut-off: per-day statistics read in SQL, then each
    day's effect, the novelty trends and their Holm flags (nothing stored)."""
    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    started = time.perf_counter()
    with _consistent_read():
        aggregates = time_aggregates(
            experiment_id=experiment.pk,
            project_id=experiment.project_id,
            metrics=[_metric_spec(em) for em in cut.ems],
            since=since,
            through=cut.through,
            caps={key: dict(agg.caps) for key, agg in cut.aggregates.items()},
        )
    seconds = time.perf_counter() - started
    keys = {v.pk: v.key for v in cut.variants}
    control, treatments = cut.plan.control, cut.plan.treatments
    alpha = float(experiment.alpha)
    daily: list[dict[str, Any]] = []
    novelty: list[dict[str, Any]] = []
    sufficient: dict[str, dict[str, list]] = {}
    trends: list[dict[str, Any]] = []
    for em in cut.ems:
        metric = em.metric
        found = aggregates.metrics.get(metric.key)
        if found is None:
            continue
        views = {"calendar": found.calendar, "since_exposure": found.since_exposure}
        sufficient[metric.key] = {view: _sufficient(by_day, keys) for view, by_day in views.items()}
        for view, out in (("calendar", daily), ("since_exposure", novelty)):
            for day, by_pk in sorted(views[view].items()):
                by_key = {keys[pk]: s for pk, s in by_pk.items() if pk in keys}
                for variant in treatments:
                    effect = day_effect(
                        by_key.get(control, EMPTY), by_key.get(variant, EMPTY), metric.kind, alpha
                    )
                    out.append(
                        {
                            "metric": metric.key,
                            "variant": variant,
                            **_day_label(view, day, aggregates.first_day, aggregates.calendar_days),
                            **{f: getattr(effect, f) for f in EFFECT_FIELDS},
                            "rel_variance": effect.rel_variance,
                        }
                    )
        for variant in treatments:
            points = [
                r
                for r in novelty
                if r["metric"] == metric.key and r["variant"] == variant and r["rel_variance"]
            ]
            trends.append(_trend(metric.key, variant, points, metric.conversion_window_hours))
    flags = novelty_flags([t["p_value"] for t in trends], alpha)
    for trend, flag in zip(trends, flags, strict=True):
        trend.update(adjusted_p_value=flag.adjusted_p_value, fading=flag.fading)
        trend["verdict"] = _verdict(trend)
    return {
        "data_through": cut.through,
        "seconds": seconds,
        "first_day": aggregates.first_day,
        "alpha": alpha,
        "daily": daily,
        "novelty": novelty,
        "trends": trends,
        "sufficient": sufficient,
        "errors": dict(aggregates.errors),
    }


def _day_label(view: str, day: int, first_day: date, calendar_days: int) -> dict[str, Any]:
    if view == "calendar":
        return {
            "date": (first_day + timedelta(days=day)).isoformat(),
            "partial": day == calendar_days - 1,
        }
    return {"day": day}


def _sufficient(by_day: dict[int, dict[int, SampleStats]], keys: dict[int, str]) -> list[list]:
    """[day, variant, n, sum, sum_sq, den_sum, den_sum_sq, sum_prod] per day and variant."""
    return [
        [day, keys[pk], s.n, s.sum, s.sum_sq, s.den_sum, s.den_sum_sq, s.sum_prod]
        for day, by_pk in sorted(by_day.items())
        for pk, s in sorted(by_pk.items())
        if pk in keys
    ]


def _trend(metric: str, variant: str, points: list[dict[str, Any]], window_hours: int) -> dict:
    """The novelty trend of one metric and arm over its per-day relative lifts."""
    trend = novelty_trend(
        [p["day"] for p in points],
        [p["lift_rel"] for p in points],
        [p["rel_variance"] for p in points],
    )
    out: dict[str, Any] = {"metric": metric, "variant": variant, "days": len(points)}
    fields = ("slope", "se", "z", "intercept", "weighted_mean", "dispersion", "p_value")
    out.update({f: getattr(trend, f) if trend else None for f in fields})
    if trend is None:
        whole = min(MAX_EXPOSURE_DAYS, int(window_hours) // 24)
        out["reason"] = (
            f"needs a relative lift on {MIN_DAYS} or more complete days since exposure; "
            f"{len(points)} so far (the conversion window holds {whole} whole day"
            f"{'' if whole == 1 else 's'})"
        )
    return out


def _verdict(trend: dict[str, Any]) -> str:
    """not_tested (too few days), fading (the Holm-adjusted p-value below alpha) or not_fading."""
    if trend["p_value"] is None:
        return "not_tested"
    return "fading" if trend["fading"] else "not_fading"


# --- reading ---------------------------------------------------------------------------------


def time_view_get(experiment: Experiment) -> TimeView | None:
    """The stored views without their sufficient statistics (which only re-derivation reads)."""
    return TimeView.objects.filter(experiment=experiment).defer("sufficient").first()


def _header(experiment: Experiment, view: TimeView | None) -> dict[str, Any]:
    return {
        "experiment": experiment.key,
        "timezone": "UTC",
        "computed_at": view.computed_at.isoformat() if view else None,
        "data_through": view.data_through.isoformat() if view else None,
        "phase": view.phase if view else None,
        "alpha": view.alpha if view else float(experiment.alpha),
        "errors": view.errors if view else {},
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "rel_variance"}


def daily_json(
    experiment: Experiment, view: TimeView | None, metrics: list[str], days: int | None
) -> dict[str, Any]:
    """The results/daily response: rows per (metric, arm, calendar day), oldest first,
    optionally only ``metrics`` and the last ``days`` days."""
    rows = [r for r in (view.daily if view else []) if not metrics or r["metric"] in metrics]
    if days is not None and rows:
        dates = sorted({r["date"] for r in rows})[-days:]
        rows = [r for r in rows if r["date"] in dates]
    return {
        **_header(experiment, view),
        "max_days": MAX_CALENDAR_DAYS,
        "first_day": view.first_day.isoformat() if view else None,
        "days": [_public(r) for r in rows],
    }


def novelty_json(experiment: Experiment, view: TimeView | None, metrics: list[str]) -> dict:
    """The results/novelty response: rows per (metric, arm, day since exposure) and the trend
    and verdict per (metric, arm)."""

    def wanted(r: dict[str, Any]) -> bool:
        return not metrics or r["metric"] in metrics

    return {
        **_header(experiment, view),
        "max_days": MAX_EXPOSURE_DAYS,
        "days": [_public(r) for r in (view.novelty if view else []) if wanted(r)],
        "trends": [t for t in (view.trends if view else []) if wanted(t)],
    }


# --- the dashboard ---------------------------------------------------------------------------

VERDICT_LABELS = {
    "fading": "Novelty: effect fading",
    "not_fading": "No sign of novelty",
    "not_tested": "Novelty not tested",
}


def _p_text(p: float | None) -> str:
    return "—" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _verdict_text(trend: dict[str, Any], family: int) -> str:
    """One sentence for the dashboard, with the p-value the verdict rests on."""
    verdict = trend["verdict"]
    if verdict == "not_tested":
        return f"{VERDICT_LABELS[verdict]}: {trend.get('reason', 'too few days')}."
    p = _p_text(trend["adjusted_p_value"])
    holm = f"Holm-adjusted over {family} test{'s' if family != 1 else ''}"
    if verdict == "fading":
        return (
            f"{VERDICT_LABELS[verdict]}: the lift moves toward zero by "
            f"{abs(trend['slope']) * 100:.1f} points a day since exposure (p = {p}, {holm})."
        )
    return f"{VERDICT_LABELS[verdict]}: no significant trend toward zero (p = {p}, {holm})."


def _points(rows: list[dict[str, Any]], label: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(
            {
                "x": r[label],
                "lift": r["lift_rel"],
                "lo": r["ci_low"],
                "hi": r["ci_high"],
                "cn": r["control_n"],
                "tn": r["variant_n"],
                "partial": r.get("partial", False),
            }
        )
    return out


def time_views_context(
    experiment: Experiment, metrics: list[tuple[str, str, str]]
) -> dict[str, Any] | None:
    """What the results page shows of the stored views: per metric (key, name, role) its
    verdicts as sentences, and the charts' data; None before the first computation."""
    view = time_view_get(experiment)
    if view is None:
        return None
    tested = sum(1 for t in view.trends if t["p_value"] is not None)
    blocks, chart = [], {}
    for key, name, role in metrics:
        trends = [t for t in view.trends if t["metric"] == key]
        blocks.append(
            {
                "key": key,
                "name": name,
                "role": role,
                "error": view.errors.get(key, ""),
                "verdicts": [
                    {
                        "variant": t["variant"],
                        "verdict": t["verdict"],
                        "text": _verdict_text(t, tested),
                    }
                    for t in trends
                ],
            }
        )
        chart[key] = {
            "calendar": _points([r for r in view.daily if r["metric"] == key], "date"),
            "since_exposure": _points([r for r in view.novelty if r["metric"] == key], "day"),
            "trends": {
                t["variant"]: {
                    "intercept": t["intercept"],
                    "slope": t["slope"],
                    "verdict": t["verdict"],
                }
                for t in trends
            },
        }
    return {
        "view": view,
        "level": f"{(1 - view.alpha) * 100:g}%",
        "metrics": blocks,
        "chart": {
            "alpha": view.alpha,
            "first_day": view.first_day.isoformat(),
            "data_through": view.data_through.isoformat(),
            "variants": [v.key for v in experiment.variants.all() if not v.is_control],
            "metrics": chart,
        },
    }
