"""The breakdown export: one row per (level, metric, treatment arm) of an experiment's dimension
breakdown, with ``dimension`` and ``level`` columns, as CSV, JSON or Parquet through the same
writers as the result exports (docs/exports.md, "Breakdown exports")."""

from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from django.utils.text import slugify

from analysis.breakdown import experiment_breakdown
from analysis.breakdown_aggregation import BREAKDOWN_LEVELS
from analysis.export_writers import WRITERS
from analysis.exports import COLUMNS, FORMATS, Column
from core.errors import DomainError
from experiments.models import Experiment
from stats import SampleStats

STAT_FIELDS = tuple(f.name for f in fields(SampleStats))
_RESULT = {c.name: c for c in COLUMNS}

# The order is the export's column order; docs/exports.md lists them and a test keeps the two
# in step. Columns named as in the result export are its columns (the same type; "details" ones
# come from the stats engine's result, the others from the breakdown row).
BREAKDOWN_COLUMNS: tuple[Column, ...] = (
    Column("project", "string", "breakdown"),
    Column("experiment", "string", "breakdown"),
    Column("snapshot_id", "int", "breakdown"),
    Column("data_through", "timestamp", "breakdown"),
    Column("phase", "int", "breakdown"),
    Column("dimension", "string", "breakdown"),
    Column("level", "string", "level"),
    Column("level_kind", "string", "level"),
    Column("level_units", "int", "level"),
    *(_RESULT[name] for name in ("metric", "metric_kind", "role", "variant")),
    *(_RESULT[name] for name in ("control_n", "control_mean")),
    Column("variant_n", "int", "row"),
    Column("variant_mean", "float", "row"),
    *(
        _RESULT[name]
        for name in (
            "lift_abs",
            "lift_rel",
            "ci_low",
            "ci_high",
            "ci_abs_low",
            "ci_abs_high",
            "p_value",
            "adjusted_p_value",
            "alpha",
            "method",
            "significant",
            "improved",
            "harmed",
            "status",
            "message",
            "error",
        )
    ),
    Column("heterogeneity_p_value", "float", "heterogeneity"),
    Column("heterogeneity_adjusted_p_value", "float", "heterogeneity"),
    Column("heterogeneity_q", "float", "heterogeneity"),
    Column("heterogeneity_df", "int", "heterogeneity"),
    Column("heterogeneity_i_squared", "float", "heterogeneity"),
    Column("correction", "string", "breakdown"),
    Column("heterogeneity_correction", "string", "breakdown"),
    # The sufficient statistics of both arms (their n are control_n and variant_n).
    *(Column(f"control_{f}", "float", "stats") for f in STAT_FIELDS[1:]),
    *(Column(f"variant_{f}", "float", "stats") for f in STAT_FIELDS[1:]),
)


def breakdown_export_rows(experiment: Experiment, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The export rows of one breakdown (``analysis.breakdown.experiment_breakdown``'s JSON)."""
    tests = {(t["metric"], t["variant"]): t for t in data["heterogeneity"]}
    base = {
        "project": experiment.project.slug,
        "experiment": experiment.key,
        "snapshot_id": data["snapshot_id"],
        "data_through": datetime.fromisoformat(data["data_through"]).astimezone(UTC),
        "phase": data["phase"],
        "dimension": data["dimension"],
        "correction": data["correction"]["levels"],
        "heterogeneity_correction": data["correction"]["heterogeneity"],
    }
    out = []
    for level in data["levels"]:
        for row in level["metrics"]:
            details = row.get("details") or {}
            test = tests.get((row["metric"], row["variant"]), {})
            values = {
                **base,
                "level": level["value"],
                "level_kind": level["kind"],
                "level_units": level["units"],
                "heterogeneity_p_value": test.get("p_value"),
                "heterogeneity_adjusted_p_value": test.get("adjusted_p_value"),
                "heterogeneity_q": test.get("q"),
                "heterogeneity_df": test.get("df"),
                "heterogeneity_i_squared": test.get("i_squared"),
            }
            for arm in ("control", "variant"):
                for f in STAT_FIELDS[1:]:
                    values[f"{arm}_{f}"] = row[f"{arm}_stats"][f]
            for col in BREAKDOWN_COLUMNS:
                if col.name not in values:
                    source = details if col.source == "details" else row
                    values[col.name] = source.get(col.name)
            out.append({c.name: values[c.name] for c in BREAKDOWN_COLUMNS})
    return out


def breakdown_export_filename(
    experiment: Experiment, dimension: str, fmt: str, now: datetime | None = None
) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    name = slugify(dimension) or "dimension"
    return f"abacus-{experiment.project.slug}-{experiment.key}-breakdown-{name}-{stamp}.{fmt}"


def breakdown_export_stream(
    experiment: Experiment, dimension: Any, fmt: str, *, levels: int = BREAKDOWN_LEVELS
) -> Iterator[bytes]:
    """The breakdown as bytes in ``fmt`` (csv | json | parquet). The breakdown is computed
    before the first byte, so a bad dimension or a timeout is an error, not a cut file."""
    if fmt not in WRITERS:
        raise DomainError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.", "format")
    rows = breakdown_export_rows(
        experiment, experiment_breakdown(experiment, dimension, levels=levels)
    )
    return WRITERS[fmt]([rows], None, BREAKDOWN_COLUMNS)
