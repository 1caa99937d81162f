"""What the results pages show, from a snapshot: the banner (headline and advice), the metrics
table, the breakdown table and the charts' data, and the number formats (presentation only:
every number here is already in the snapshot). The pages are analysis/views.py."""

from typing import Any

from analysis.models import Recommendation, ResultSnapshot
from analysis.selectors import MetricBlock, Progress, RoleGroup
from experiments.models import Experiment, ExperimentStatus

STATUS_LABELS = {
    "improved": "Improved",
    "harmed": "Harmed",
    "non_inferior": "Non-inferior",
    "neutral": "Neutral",
    "collecting": "Collecting data",
    "error": "Cannot compute",
    "": "No test",
}
METHOD_LABELS = {
    "group_sequential": "group-sequential design (Lan-DeMets, O'Brien-Fleming)",
    "sequential": "always-valid confidence sequences",
    "fixed": "fixed-horizon tests",
}


# --- formatting (presentation only: every number here is already in the snapshot) --------------


def pct(x: float | None, *, signed: bool = True, digits: int = 2) -> str:
    if x is None:
        return "—"
    return f"{x * 100:{'+' if signed else ''}.{digits}f}%".replace("-", "−")


def _num(x: float | None, *, signed: bool = False) -> str:
    if x is None:
        return "—"
    sign = "+" if signed else ""
    text = f"{x:{sign},.0f}" if abs(x) >= 1000 else f"{x:{sign}.4g}"
    return text.replace("-", "−")


def _value(x: float | None, kind: str) -> str:
    return pct(x, signed=False) if kind == "binomial" else _num(x)


def _abs_lift(x: float | None, kind: str) -> str:
    if kind == "binomial" and x is not None:
        return f"{x * 100:+.2f} pp".replace("-", "−")
    return _num(x, signed=True)


def interval(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "—"
    if low is None or high is None:  # Fieller's interval is unbounded while mu_c ~ 0
        low_text = pct(low) if low is not None else "-∞"
        return f"{low_text} to {pct(high) if high is not None else '+∞'}"
    return f"{pct(low)} to {pct(high)}"


def p_value(x: float | None) -> str:
    if x is None:
        return "—"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _chance(x: float | None) -> str:
    if x is None:
        return "—"
    if x > 0.999:
        return "> 99.9%"
    return "< 0.1%" if x < 0.001 else f"{x * 100:.1f}%"


def _arm_cells(block: MetricBlock, row: dict[str, Any]) -> dict[str, Any]:
    d = row.get("details") or {}
    reduction = d.get("cuped_variance_reduction")
    return {
        "variant": row["variant"],
        "status": row["status"] or "none",
        "status_label": STATUS_LABELS.get(row["status"], row["status"]),
        "control": _value(row["control_mean"], block.kind),
        "control_n": f"{row['control_n']:,}" if row["control_n"] is not None else "—",
        "treatment": _value(row["variant_mean"], block.kind),
        "treatment_n": f"{row['variant_n']:,}",
        "lift_abs": _abs_lift(row["lift_abs"], block.kind),
        "lift_rel": pct(row["lift_rel"]),
        "interval": interval(row["ci_low"], row["ci_high"]),
        "p_value": p_value(row["p_value"]),
        "fixed_interval": interval(d.get("fixed_ci_low"), d.get("fixed_ci_high")),
        "fixed_p_value": p_value(row["fixed_p_value"]),
        "adjusted_p": p_value(row.get("adjusted_p_value"))
        if row.get("adjusted_p_value") is not None
        else "",
        "credible_interval": interval(d.get("credible_low"), d.get("credible_high")),
        "chance_to_win": _chance(d.get("chance_to_win")),
        "cuped": pct(reduction, signed=False, digits=1) if block.cuped else "off",
        "cuped_title": (
            "Variance removed by the pre-exposure covariate (CUPED)"
            if reduction
            else (d.get("message") or "")
        ),
        "message": d.get("message") or "",
    }


def table(groups: list[RoleGroup]) -> list[dict[str, Any]]:
    out = []
    for group in groups:
        metrics = []
        for block in group.metrics:
            margin = None
            if block.margin is not None:
                sign = -1 if block.direction == "increase" else 1
                margin = pct(sign * block.margin, digits=1)
            metrics.append(
                {
                    "key": block.key,
                    "name": block.name,
                    "kind": block.kind,
                    "direction": block.direction,
                    "margin": margin,
                    "arms": [_arm_cells(block, r) for r in block.arms],
                }
            )
        out.append({"role": group.role, "label": group.label, "metrics": metrics})
    return out


def breakdown_table(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The breakdown's levels and heterogeneity tests as the page shows them."""
    levels = []
    for level in data["levels"]:
        rows = []
        for row in level["metrics"]:
            kind = row["kind"]
            rows.append(
                {
                    "metric": names.get(row["metric"], row["metric"]),
                    "metric_key": row["metric"],
                    "variant": row["variant"],
                    "status": row["status"] or "none",
                    "status_label": STATUS_LABELS.get(row["status"], row["status"]),
                    "control": _value(row["control_mean"], kind),
                    "control_n": f"{row['control_n']:,}" if row["control_n"] is not None else "—",
                    "treatment": _value(row["variant_mean"], kind),
                    "treatment_n": f"{row['variant_n']:,}",
                    "lift_rel": pct(row["lift_rel"]),
                    "interval": interval(row["ci_low"], row["ci_high"]),
                    "p_value": p_value(row["p_value"]),
                    "adjusted_p": p_value(row["adjusted_p_value"]),
                    "message": (row.get("details") or {}).get("message") or "",
                }
            )
        levels.append({**level, "units_text": f"{level['units']:,}", "rows": rows})
    tests = [
        {
            **t,
            "metric_name": names.get(t["metric"], t["metric"]),
            "p_text": p_value(t["p_value"]),
            "adjusted_text": p_value(t["adjusted_p_value"]),
            "i_squared_text": pct(t["i_squared"], signed=False, digits=0),
        }
        for t in data["heterogeneity"]
    ]
    return {**data, "levels": levels, "heterogeneity": tests}


def days(x: float | None) -> str:
    if x is None:
        return ""
    return "less than a day" if x < 1 else f"{x:,.0f} day{'s' if round(x) != 1 else ''}"


def banner(
    experiment: Experiment, snapshot: ResultSnapshot, results: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The headline and the one sentence of advice a product manager acts on."""
    rec = results["recommendation"]
    action = rec["action"]
    headline, advice, days_left = _headline_and_advice(snapshot, results, progress)
    if experiment.status in (ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK):
        advice = (
            f"This experiment is {experiment.get_status_display().lower()}; the recommendation "
            f"was made at its last snapshot. " + advice
        )
    return {
        "action": action,
        "headline": headline,
        "advice": advice,
        "days_left": days_left,
        "units": f"{snapshot.total_units:,}",
        "method": METHOD_LABELS.get(snapshot.method, snapshot.method),
        "progress": _progress_text(progress),
    }


def _headline_and_advice(
    snapshot: ResultSnapshot, results: dict[str, Any], progress: Progress
) -> tuple[str, str, str | None]:
    """(headline, advice, days left as text or None) for the snapshot's recommendation."""
    rec = results["recommendation"]
    action = rec["action"]
    names = _arm_names(results)
    if action == Recommendation.KEEP:
        return (
            f"Keep {names}",
            f"Ship {names}: it improves the primary metric and no guardrail is harmed. "
            "Roll it out to everyone and conclude the experiment.",
            None,
        )
    if action == Recommendation.ROLLBACK:
        return "Roll back", _rollback_advice(snapshot, names), None
    if snapshot.cause == "collecting":
        advice = (rec.get("reasons") or ["Collecting data before a first decision."])[0]
        return "Collecting data", advice + " Until then no metric is judged and nothing acts.", None
    advice, days_left = _extend_advice(rec, progress)
    return "Extend", advice, days_left


def _arm_names(results: dict[str, Any]) -> str:
    """The arms the recommendation is about, quoted ('a', 'b'); the shipped one for keep."""
    rec = results["recommendation"]
    action = rec["action"]
    arms = [a for a in results.get("arms", []) if a.get("action") == action]
    names = ", ".join(f"'{a['variant']}'" for a in arms) or "the treatment"
    if action == Recommendation.KEEP and rec.get("ship_variant"):
        names = f"'{rec['ship_variant']}'"
    return names


def _rollback_advice(snapshot: ResultSnapshot, names: str) -> str:
    # The pipeline stored why (ResultSnapshot.cause); the page only reads it.
    if snapshot.cause == "unhealthy":
        return (
            "The data cannot be trusted: fix the problem named below, then restart the "
            "experiment. Until then everyone should get the control experience."
        )
    if snapshot.cause == "harm":
        return f"{names.capitalize()} harms a key metric: give everyone the control."
    return (
        "No detectable improvement by the planned sample size or end date: keep the "
        "control and conclude the experiment."
    )


def _extend_advice(rec: dict[str, Any], progress: Progress) -> tuple[str, str | None]:
    """How much longer to run: the stored extension if any, else the planned sample."""
    extra_days, extra_units = rec.get("extra_days"), rec.get("extra_units")
    if extra_days is not None:
        days_left = days(extra_days)
        more = f" ({extra_units:,} more units)" if extra_units is not None else ""
        return (
            f"Keep the experiment running: the data cannot tell yet. About {days_left} "
            f"more{more} at the traffic seen so far should settle it.",
            days_left,
        )
    if extra_units is not None:
        return (
            f"Keep the experiment running: about {extra_units:,} more units are needed; "
            "there is no traffic yet to turn that into days.",
            None,
        )
    if progress.planned is None:
        return (
            "Keep the experiment running: the data cannot tell yet. Set a planned sample "
            "size to get an estimate of the days left.",
            None,
        )
    if progress.days_left is None:
        return "Keep the experiment running: no traffic has been seen yet.", None
    days_left = days(progress.days_left)
    return (
        f"Keep the experiment running: the data cannot tell yet. About {days_left} "
        f"left to reach the planned {progress.planned:,} units "
        f"({progress.units_left:,} more at {progress.units_per_day or 0:,.0f} a day).",
        days_left,
    )


def _progress_text(progress: Progress) -> str:
    if progress.planned:
        return (
            f"{progress.units:,} of {progress.planned:,} planned units "
            f"({(progress.fraction or 0) * 100:.0f}%)"
        )
    return f"{progress.units:,} units; no planned sample size"


def chart_data(
    experiment: Experiment,
    groups: list[RoleGroup],
    history: list[dict[str, Any]],
    progress: Progress,
) -> dict[str, Any]:
    def arm(row: dict[str, Any]) -> dict[str, Any]:
        d = row.get("details") or {}
        return {
            "variant": row["variant"],
            "status": row["status"],
            "lift_rel": row["lift_rel"],
            "seq": [row["ci_low"], row["ci_high"]],
            "fixed": [d.get("fixed_ci_low"), d.get("fixed_ci_high")],
            "bayes": [d.get("credible_low"), d.get("credible_high")],
        }

    return {
        "variants": [
            {"key": v.key, "name": v.name, "weight": v.weight, "is_control": v.is_control}
            for v in experiment.variants.all()
        ],
        "metrics": [
            {
                "key": b.key,
                "name": b.name,
                "role": b.role,
                "direction": b.direction,
                "margin": b.margin,
                "arms": [arm(r) for r in b.arms],
            }
            for g in groups
            for b in g.metrics
        ],
        "history": history,
        "progress": {
            "units": progress.units,
            "planned": progress.planned,
            "fraction": progress.fraction,
            "units_left": progress.units_left,
            "days_left": progress.days_left,
            "units_per_day": progress.units_per_day,
            "expected_end": progress.expected_end.isoformat() if progress.expected_end else None,
        },
    }
