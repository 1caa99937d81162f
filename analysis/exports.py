"""Result exports: one row per (experiment, snapshot, metric, variant) as CSV, JSON or Parquet.

The columns, the filter and the rows; the writers (analysis/export_writers.py) stream them: rows
come from the database in chunks and leave as bytes in chunks, so an export of any size runs in
flat memory. The columns are documented in docs/exports.md; a test keeps that page and
``COLUMNS`` in step.
"""

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
from django.db import models

from analysis.models import ResultRow
from analysis.selectors import ExportFilter, SnapshotRows, export_snapshots
from core.errors import DomainError
from core.replica import stream_analysis_reads
from experiments.models import Experiment, ExperimentStatus, Project

FORMATS = ("csv", "json", "parquet")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | int | float | bool | timestamp | floats | json
    source: str  # snapshot | metric | row | details | derived


# The order is the export's column order. "details" columns come from the stats engine's
# MetricResult stored in ResultRow.details; "row" columns are ResultRow fields.
COLUMNS: tuple[Column, ...] = (
    Column("project", "string", "snapshot"),
    Column("experiment", "string", "snapshot"),
    Column("experiment_name", "string", "snapshot"),
    Column("experiment_status", "string", "snapshot"),
    Column("snapshot_id", "int", "snapshot"),
    Column("computed_at", "timestamp", "snapshot"),
    Column("data_through", "timestamp", "snapshot"),
    Column("phase", "int", "snapshot"),
    Column("total_units", "int", "snapshot"),
    Column("look_kind", "string", "snapshot"),
    Column("recommendation", "string", "snapshot"),
    Column("arm_recommendation", "string", "derived"),
    Column("ship_variant", "string", "snapshot"),
    Column("extra_units", "int", "snapshot"),
    Column("extra_days", "float", "snapshot"),
    Column("srm_p_value", "float", "snapshot"),
    Column("healthy", "bool", "snapshot"),
    Column("metric", "string", "row"),
    Column("metric_name", "string", "metric"),
    Column("metric_kind", "string", "row"),
    Column("role", "string", "row"),
    Column("direction", "string", "metric"),
    Column("non_inferiority_margin", "float", "metric"),
    Column("decision_policy", "string", "snapshot"),
    Column("experiment_alpha", "float", "snapshot"),
    Column("cuped", "bool", "metric"),
    Column("alpha", "float", "row"),
    Column("alpha_good", "float", "details"),
    Column("alpha_bad", "float", "details"),
    Column("margin", "float", "derived"),
    Column("tuning_n", "int", "derived"),
    Column("planned_n", "int", "derived"),
    Column("previous_looks", "floats", "derived"),
    Column("variant", "string", "row"),
    Column("is_control", "bool", "row"),
    Column("n", "int", "row"),
    Column("sum", "float", "row"),
    Column("sum_sq", "float", "row"),
    Column("den_sum", "float", "row"),
    Column("den_sum_sq", "float", "row"),
    Column("sum_prod", "float", "row"),
    Column("cov_sum", "float", "row"),
    Column("cov_sum_sq", "float", "row"),
    Column("cov_sum_prod", "float", "row"),
    Column("mean", "float", "row"),
    Column("control_n", "int", "derived"),
    Column("control_mean", "float", "derived"),
    Column("lift_abs", "float", "row"),
    Column("lift_rel", "float", "row"),
    Column("ci_low", "float", "row"),
    Column("ci_high", "float", "row"),
    Column("ci_abs_low", "float", "details"),
    Column("ci_abs_high", "float", "details"),
    Column("p_value", "float", "row"),
    Column("fixed_ci_low", "float", "details"),
    Column("fixed_ci_high", "float", "details"),
    Column("fixed_p_value", "float", "row"),
    Column("adjusted_p_value", "float", "row"),
    Column("cs_ci_low", "float", "details"),
    Column("cs_ci_high", "float", "details"),
    Column("cs_p_value", "float", "details"),
    Column("chance_to_win", "float", "details"),
    Column("credible_low", "float", "details"),
    Column("credible_high", "float", "details"),
    Column("cuped_variance_reduction", "float", "details"),
    Column("information_fraction", "float", "row"),
    Column("looks", "floats", "snapshot"),
    Column("boundary_z", "float", "details"),
    Column("bound_bad_z", "float", "details"),
    Column("method", "string", "row"),
    Column("significant", "bool", "row"),
    Column("improved", "bool", "details"),
    Column("harmed", "bool", "details"),
    Column("non_inferior", "bool", "details"),
    Column("status", "string", "row"),
    Column("message", "string", "details"),
    Column("error", "string", "details"),
    Column("details", "json", "row"),
    Column("look_number", "int", "derived"),
)

# Columns that compare a treatment with the control: null on control rows in every format (the
# stored control row has "" or false in some of them, which would read as a value).
TREATMENT_ONLY = frozenset(
    {
        "arm_recommendation",
        "alpha",
        "alpha_good",
        "alpha_bad",
        "margin",
        "tuning_n",
        "planned_n",
        "previous_looks",
        "lift_abs",
        "lift_rel",
        "ci_low",
        "ci_high",
        "ci_abs_low",
        "ci_abs_high",
        "p_value",
        "fixed_ci_low",
        "fixed_ci_high",
        "fixed_p_value",
        "adjusted_p_value",
        "cs_ci_low",
        "cs_ci_high",
        "cs_p_value",
        "chance_to_win",
        "credible_low",
        "credible_high",
        "cuped_variance_reduction",
        "information_fraction",
        "looks",
        "boundary_z",
        "bound_bad_z",
        "method",
        "significant",
        "improved",
        "harmed",
        "non_inferior",
        "status",
    }
)
HISTORY = ("all", "looks")

ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "floats": pa.list_(pa.float64()),
    # Parquet's JSON logical type over UTF-8: readers that know it see JSON, others the same
    # text as before. Not a struct or map: details' keys and value types vary row to row.
    "json": pa.json_(),
}
_FIELD_TYPES = {
    models.BooleanField: "bool",
    models.FloatField: "float",
    models.DecimalField: "float",
    models.IntegerField: "int",  # and its Big/Positive/Small subclasses
    models.DateTimeField: "timestamp",
    models.JSONField: "json",
}


def columns() -> tuple[Column, ...]:
    """COLUMNS plus any ResultRow field added since (the pipeline may add numbers), at the end."""
    known = {c.name for c in COLUMNS} | {"id", "snapshot", "metric", "metric_key"}
    extra = []
    for f in ResultRow._meta.concrete_fields:
        if f.name in known:
            continue
        kind = next((t for cls, t in _FIELD_TYPES.items() if isinstance(f, cls)), "string")
        extra.append(Column(f.name, kind, "row"))
    return COLUMNS + tuple(extra)


# --- filters ------------------------------------------------------------------------------------


def parse_time_bound(value: str, *, end: bool = False) -> datetime:
    """A date (``2026-11-29``; as an upper bound it includes that whole day) or an ISO 8601
    date-time (UTC unless it carries an offset)."""
    value = value.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    out_of_range = f"'{value}' is out of range: use a date between 0001-01-02 and 9999-12-30."
    if day is not None:
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        try:
            return moment + timedelta(days=1) if end else moment
        except OverflowError:  # the day after 9999-12-31
            raise ValueError(out_of_range) from None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise ValueError(
            f"'{value}' is not a date (2026-11-29) or an ISO 8601 date-time (2026-11-29T10:00:00Z)."
        ) from None
    try:  # an offset can carry it past datetime's range once in UTC
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(out_of_range) from None


def _split(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for s in values for v in s.split(",") if v.strip()))


def export_filter_build(
    *,
    project: Project,
    experiments: Iterable[str] = (),
    statuses: Iterable[str] = (),
    since: str | None = None,
    until: str | None = None,
    latest_only: bool = False,
    history: str = "all",
) -> ExportFilter:
    """Check the filters against the project; comma-separated lists are accepted."""
    keys = _split(experiments)
    unknown = set(keys) - set(
        Experiment.objects.filter(project=project, key__in=keys).values_list("key", flat=True)
    )
    if unknown:
        raise DomainError(
            f"No experiment {', '.join(repr(k) for k in sorted(unknown))} in project "
            f"'{project.slug}'.",
            field="experiment",
        )
    wanted = _split(statuses)
    bad = [s for s in wanted if s not in ExperimentStatus.values]
    if bad:
        raise DomainError(
            f"Unknown status {', '.join(repr(s) for s in bad)}; use one of "
            f"{', '.join(ExperimentStatus.values)}.",
            field="status",
        )
    bounds = {}
    for name, value, end in (("since", since, False), ("until", until, True)):
        if value:
            try:
                bounds[name] = parse_time_bound(value, end=end)
            except ValueError as exc:
                raise DomainError(str(exc), field=name) from None
    if history not in HISTORY:
        raise DomainError(
            f"Unknown history '{history}'; use one of {', '.join(HISTORY)}.", field="history"
        )
    if bounds.get("since") and bounds.get("until") and bounds["since"] >= bounds["until"]:
        raise DomainError("'since' must be before 'until'.", field="since")
    return ExportFilter(
        project=project,
        experiments=keys,
        statuses=wanted,
        since=bounds.get("since"),
        until=bounds.get("until"),
        latest_only=latest_only,
        looks_only=history == "looks",
    )


def export_filename(flt: ExportFilter, fmt: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    scope = flt.project.slug
    if len(flt.experiments) == 1:
        scope += f"-{flt.experiments[0]}"
    elif flt.experiments:
        scope += f"-{len(flt.experiments)}-experiments"
    kind = "latest" if flt.latest_only else "looks" if flt.looks_only else "history"
    return f"abacus-{scope}-{kind}-{stamp}.{fmt}"


# --- rows ---------------------------------------------------------------------------------------


def _design_columns(r: ResultRow) -> dict[str, Any]:
    """How a treatment row's comparison was set up (the pair's planned sample, the margin it was
    judged against, the earlier group-sequential looks), as the pipeline stored it in
    ``details`` from the AnalysisConfig it used."""
    if r.is_control:
        return {"margin": None, "tuning_n": None, "planned_n": None, "previous_looks": None}
    details = r.details or {}
    return {
        "margin": details.get("margin"),
        "tuning_n": details.get("tuning_n"),
        "planned_n": details.get("planned_n"),
        "previous_looks": details.get("previous_fractions"),
    }


def snapshot_export_rows(item: SnapshotRows, cols: tuple[Column, ...]) -> list[dict[str, Any]]:
    """The export rows of one snapshot, with Python values (datetimes, dicts, None)."""
    snapshot, rows = item.snapshot, item.rows
    experiment = snapshot.experiment
    health = snapshot.health or {}
    arm_actions = {a.get("variant"): a.get("action") for a in snapshot.arms or []}
    controls = {r.metric_key: r for r in rows if r.is_control}
    looks = getattr(snapshot, "looks", None) or {}
    base = {
        "project": experiment.project.slug,
        "experiment": experiment.key,
        "experiment_name": experiment.name,
        "experiment_status": experiment.status,
        "snapshot_id": snapshot.pk,
        "computed_at": snapshot.computed_at,
        "data_through": snapshot.data_through,
        "phase": snapshot.phase,
        "total_units": snapshot.total_units,
        "look_kind": snapshot.look_kind,
        "recommendation": snapshot.recommendation,
        "ship_variant": getattr(snapshot, "ship_variant", "") or None,
        "extra_units": getattr(snapshot, "extra_units", None),
        "extra_days": getattr(snapshot, "extra_days", None),
        "srm_p_value": health.get("srm_p_value"),
        "healthy": health.get("healthy"),
        "decision_policy": experiment.decision_policy,
        "experiment_alpha": experiment.alpha,
    }
    out = []
    for r in rows:
        details = r.details or {}
        em = item.definitions.get(r.metric_id) if r.metric_id else None
        metric = em.metric if em else None
        control = controls.get(r.metric_key)
        # The level the pipeline tested the row at (rows written before it stored one were
        # backfilled by migration 0005); control rows have none.
        alpha = r.alpha
        fraction = getattr(r, "information_fraction", None)
        values = dict(base)
        values.update(
            metric=r.metric_key,
            arm_recommendation=None if r.is_control else arm_actions.get(r.variant),
            metric_name=metric.name if metric else None,
            direction=metric.direction if metric else None,
            non_inferiority_margin=em.non_inferiority_margin if em else None,
            cuped=metric.cuped if metric else None,
            alpha=alpha,
            information_fraction=details.get("information_fraction", fraction)
            if fraction is None
            else fraction,
            looks=None if r.is_control else looks.get(r.variant),
            control_n=control.n if control else None,
            control_mean=control.mean if control else None,
            details=details,
            look_number=item.look_number,
            **_design_columns(r),
        )
        for col in cols:
            if col.name in values:
                continue
            if col.source == "details":
                values[col.name] = details.get(col.name)
            else:
                values[col.name] = getattr(r, col.name, None)
        if r.is_control:  # comparisons belong to treatment rows only
            for key in TREATMENT_ONLY:
                values[key] = None
        out.append({c.name: _clean(values.get(c.name), c.type) for c in cols})
    return out


def _clean(value: Any, kind: str) -> Any:
    """No value is None in every format: a non-finite float (never stored, but details is free
    JSON) and an empty string in a typed column become None rather than NaN or ""."""
    if kind in ("float", "int") and isinstance(value, float) and not math.isfinite(value):
        return None
    if kind == "floats" and value is not None:
        return [float(x) for x in value]
    return value


def export_rows(flt: ExportFilter) -> Iterator[list[dict[str, Any]]]:
    """The export's rows, one list per snapshot, read from the read replica when one is
    configured and has caught up with the primary (core.replica)."""
    cols = columns()
    for item in stream_analysis_reads(lambda: export_snapshots(flt)):
        yield snapshot_export_rows(item, cols)
