"""Reads on the holdout's comparison: the stored snapshots as the page and the API show them
(nothing is recomputed here; analysis/holdouts.py computes them in the worker)."""

from dataclasses import dataclass
from typing import Any

from analysis.models import HoldoutSnapshot
from experiments.models import Holdout

HISTORY_LIMIT = 60


def holdout_latest(holdout: Holdout) -> HoldoutSnapshot | None:
    return HoldoutSnapshot.objects.filter(holdout=holdout).order_by("-data_through", "-id").first()


def holdout_history(holdout: Holdout, limit: int = HISTORY_LIMIT) -> list[HoldoutSnapshot]:
    """The latest ``limit`` snapshots, oldest first."""
    latest = HoldoutSnapshot.objects.filter(holdout=holdout).order_by("-data_through", "-id")
    return list(reversed(latest[:limit]))


def holdout_snapshot_json(snapshot: HoldoutSnapshot) -> dict[str, Any]:
    """The API's shape of one snapshot (docs/analysts.md "Holdouts")."""
    return {
        "computed_at": snapshot.computed_at,
        "data_through": snapshot.data_through,
        "method": snapshot.method,
        "units": snapshot.units,
        "srm_p_value": snapshot.srm_p_value,
        "warnings": snapshot.warnings,
        "metrics": snapshot.metrics,
    }


def history_lifts(
    snapshots: list[HoldoutSnapshot], metric_keys: list[str]
) -> list[tuple[HoldoutSnapshot, list[str]]]:
    """Newest first: each snapshot with its relative lift of each metric, as text."""
    out = []
    for snapshot in reversed(snapshots):
        lifts = {r["metric"]: r.get("lift_rel") for r in snapshot.metrics}
        out.append((snapshot, [_pct(lifts.get(key)) for key in metric_keys]))
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.2f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


STATUS_LABELS = {
    "better": "Shipped changes improved it",
    "worse": "Shipped changes harmed it",
    "neutral": "No detectable difference",
    "error": "Not computed",
}


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored rows with the page's texts (lift, interval, p-values, means, the status) and
    each interval's bar on a shared scale (``bar``, None when unbounded)."""
    bars = interval_bars(rows)
    out = []
    for r in rows:
        low, high = r.get("ci_low"), r.get("ci_high")
        interval = "—"
        if r.get("lift_rel") is not None:  # a missing bound is unbounded (Fieller)
            low_text = "-∞" if low is None else _pct(low)
            interval = f"[{low_text}, {'+∞' if high is None else _pct(high)}]"
        out.append(
            {
                **r,
                "lift_text": _pct(r.get("lift_rel")),
                "interval_text": interval,
                "holdout_text": _num(r.get("holdout_mean")),
                "general_text": _num(r.get("general_mean")),
                "p_text": _num(r.get("p_value")),
                "adjusted_text": _num(r.get("adjusted_p_value")),
                "status_label": STATUS_LABELS.get(r.get("status", ""), r.get("status", "")),
                "bar": bars.get(r["metric"]),
            }
        )
    return out


@dataclass(frozen=True)
class IntervalBar:
    """An interval drawn on a shared scale (percent of the bar's width)."""

    low: float
    high: float
    point: float
    zero: float


def interval_bars(rows: list[dict[str, Any]]) -> dict[str, IntervalBar]:
    """Each metric's relative interval on one scale symmetric around 0, for the page's bars.
    Metrics without a bounded interval get none."""
    bounded = [r for r in rows if r.get("ci_low") is not None and r.get("ci_high") is not None]
    if not bounded:
        return {}
    reach = max(max(abs(r["ci_low"]), abs(r["ci_high"])) for r in bounded) or 1.0

    def x(value: float) -> float:
        return round(50 + 45 * value / reach, 2)

    return {
        r["metric"]: IntervalBar(
            x(r["ci_low"]), x(r["ci_high"]), x(r.get("lift_rel") or 0.0), x(0.0)
        )
        for r in bounded
    }
