"""The dashboard's reading of a snapshot: metrics grouped by role with their definitions, and
progress toward the planned sample."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from analysis.models import ResultSnapshot
from experiments.models import Experiment
from stats import days_remaining

ROLE_ORDER = ("primary", "guardrail", "secondary")
ROLE_LABELS = {"primary": "Primary", "guardrail": "Guardrails", "secondary": "Secondary"}


@dataclass(frozen=True)
class MetricBlock:
    """One metric of the latest snapshot with its definition and one row per treatment arm."""

    key: str
    name: str
    kind: str
    role: str
    direction: str
    margin: float | None
    cuped: bool
    control_n: int | None
    control_mean: float | None
    arms: list[dict[str, Any]]


@dataclass(frozen=True)
class RoleGroup:
    role: str
    label: str
    metrics: list[MetricBlock]


def metric_groups(experiment: Experiment, results: dict[str, Any]) -> list[RoleGroup]:
    """The snapshot's metrics grouped primary, guardrails, secondary, in the experiment's order."""
    definitions = {em.metric.key: em for em in experiment.experiment_metrics.all()}
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for row in results["metrics"]:
        by_metric.setdefault(row["metric"], []).append(row)
    order = list(definitions) + [k for k in by_metric if k not in definitions]
    groups = []
    for role in ROLE_ORDER + tuple(
        sorted({r[0]["role"] for r in by_metric.values()} - set(ROLE_ORDER))
    ):
        blocks = []
        for key in order:
            rows = by_metric.get(key)
            if not rows or rows[0]["role"] != role:
                continue
            em = definitions.get(key)
            # the margin the analysis judged non-inferiority against, as it stored it
            margin = next((r["margin"] for r in rows if r.get("margin") is not None), None)
            blocks.append(
                MetricBlock(
                    key=key,
                    name=em.metric.name if em else key,
                    kind=rows[0]["kind"],
                    role=role,
                    direction=em.metric.direction if em else "increase",
                    margin=margin,
                    cuped=em.metric.cuped if em else False,
                    control_n=rows[0]["control_n"],
                    control_mean=rows[0]["control_mean"],
                    arms=rows,
                )
            )
        if blocks:
            groups.append(RoleGroup(role, ROLE_LABELS.get(role, role.capitalize()), blocks))
    return groups


@dataclass(frozen=True)
class Progress:
    """How far the experiment is toward its planned sample, and how long the rest may take."""

    units: int
    planned: int | None
    fraction: float | None
    units_left: int | None
    days_left: float | None
    elapsed_days: float | None
    units_per_day: float | None
    expected_end: datetime | None


def experiment_progress(experiment: Experiment, snapshot: ResultSnapshot | None) -> Progress:
    """Units so far against the planned sample, with days left at the traffic seen so far."""
    units = snapshot.total_units if snapshot else 0
    planned = experiment.planned_sample_size
    start = experiment.phase_started_at or experiment.started_at
    elapsed = None
    if start and snapshot:
        elapsed = max(0.0, (snapshot.data_through - start).total_seconds() / 86400)
    rate = units / elapsed if elapsed and units else None
    if not planned:
        return Progress(units, None, None, None, None, elapsed, rate, None)
    remaining = days_remaining(
        current_units=units, required_units=planned, elapsed_days=elapsed or 0.0
    )
    end = None
    if remaining.days is not None and snapshot:
        end = snapshot.data_through + timedelta(days=remaining.days)
    return Progress(
        units=units,
        planned=planned,
        fraction=min(1.0, units / planned),
        units_left=remaining.units,
        days_left=remaining.days,
        elapsed_days=elapsed,
        units_per_day=rate,
        expected_end=end,
    )
