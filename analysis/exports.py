"""Result exports: one row per (experiment, snapshot, metric, variant) as CSV, JSON or Parquet.

Every writer streams: rows come from the database in chunks and leave as bytes in chunks, so an
export of any size runs in flat memory (Parquet writes one row group per batch). The columns are
documented in docs/exports.md; a test keeps that page and ``COLUMNS`` in step.
"""

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
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
BATCH_ROWS = 5000


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

_ARROW = {
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


# --- writers ------------------------------------------------------------------------------------


def _text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "timestamp":
        return value.isoformat()
    if kind in ("json", "floats"):
        return json.dumps(value, sort_keys=True)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return repr(float(value))  # shortest text that reads back to the same float
    return str(value)


# A spreadsheet reads a cell that begins with one of these as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, kind: str) -> str:
    """A CSV cell. String cells (names, keys, reasons: text people typed) that a spreadsheet
    would run as a formula get a leading single quote, OWASP's rule; numbers, booleans,
    timestamps and JSON cells are left as they are, so a negative lift stays a number."""
    text = _text(value, kind)
    if kind == "string" and text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _batches(
    groups: Iterable[list[dict[str, Any]]], on_rows: Callable[[int], None] | None
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for rows in groups:
        batch.extend(rows)
        if on_rows:
            on_rows(len(rows))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_csv(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """CSV of the rows in ``groups``, in the columns ``cols`` (default: the result export's)."""
    cols = cols or columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in cols])
    for batch in _batches(groups, on_rows):
        writer.writerows([_cell(row[c.name], c.type) for c in cols] for row in batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def stream_json(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """``{"rows": [...]}``: each row as it is (its keys are the columns, in their order)."""
    yield b'{"rows": ['
    first = True
    for batch in _batches(groups, on_rows):
        parts = []
        for row in batch:
            text = json.dumps({k: _jsonable(v) for k, v in row.items()}, allow_nan=False)
            parts.append(("\n" if first else ",\n") + text)
            first = False
        yield "".join(parts).encode()
    yield b"\n]}\n"


class _Sink(io.RawIOBase):
    """A write-only file that hands its bytes over as they come (Parquet never seeks back)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def arrow_schema(cols: tuple[Column, ...] | None = None) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW[c.type]) for c in cols or columns()])


def stream_parquet(
    groups: Iterable[list[dict[str, Any]]],
    on_rows: Callable[[int], None] | None = None,
    cols: tuple[Column, ...] | None = None,
) -> Iterator[bytes]:
    """Parquet of the rows, typed by ``cols`` (default: the result export's columns)."""
    cols = cols or columns()
    schema = arrow_schema(cols)
    json_cols = [c.name for c in cols if c.type == "json"]
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        for batch in _batches(groups, on_rows):
            for row in batch:
                for name in json_cols:
                    if row[name] is not None:
                        row[name] = json.dumps(row[name], sort_keys=True)
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


WRITERS = {"csv": stream_csv, "json": stream_json, "parquet": stream_parquet}


def export_stream(
    flt: ExportFilter, fmt: str, on_rows: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The export as a stream of bytes in ``fmt`` (csv | json | parquet)."""
    if fmt not in WRITERS:
        raise DomainError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.", "format")
    return WRITERS[fmt](export_rows(flt), on_rows)
