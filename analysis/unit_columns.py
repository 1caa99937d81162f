"""A metric's per-unit columns and per-event property columns, as the metrics statement
(analysis/aggregation.py) and the statements built on it (incremental, time views) read them."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analysis.sql.builders import Column, EventColumn
from analysis.sql.dialects import Dialect
from analysis.sql.properties import PropertySQL

if TYPE_CHECKING:
    from analysis.aggregation import MetricSpec


def metric_columns(
    index: int, metric: "MetricSpec", codes: dict[str, int], properties: dict | None = None
) -> dict[str, Column]:
    """The per-unit columns of one metric: value, and denominator or covariate (``properties``:
    the aliases of ``property_columns``)."""
    q = metric.winsorize_quantile if metric.kind != "binomial" else None
    if q is not None and q >= 1:
        q = None
    hours = int(metric.window_hours)
    code = codes[metric.event_name]
    reads = property_reads(metric, code, properties or {})
    cols = {"value": Column(f"m{index}_v", metric.kind, code, hours, False, q, **reads)}
    if metric.kind == "ratio":
        den = codes[metric.denominator_event]
        cols["denominator"] = Column(f"m{index}_d", "mean", den, hours, False, q)
    elif metric.cuped:
        cols["covariate"] = Column(f"m{index}_c", metric.kind, code, hours, True, q, **reads)
    return cols


def property_columns(metrics: Sequence["MetricSpec"], codes: dict[str, int]) -> dict[tuple, str]:
    """The per-event property columns the metrics read, each once: (event-name code, "match",
    filter) for each filter and (code, "number", value property) -> alias. A filter that several
    metrics share is evaluated once per event (property lookups are most of their cost)."""
    aliases: dict[tuple, str] = {}
    for m in metrics:
        code = codes[m.event_name]
        for f in m.filters:
            aliases.setdefault((code, "match", f), f"p{len(aliases)}")
        if m.value_property:
            aliases.setdefault((code, "number", m.value_property), f"p{len(aliases)}")
    return aliases


def property_reads(metric: "MetricSpec", code: int, aliases: dict[tuple, str]) -> dict[str, Any]:
    """What a metric's value column reads of the property columns (``property_columns``):
    ``match``, the aliases of its filters (an event counts when each is 1), and ``value``, its
    value property's alias or the event's value."""
    return {
        "match": tuple(aliases[(code, "match", f)] for f in metric.filters),
        "value": aliases[(code, "number", metric.value_property)]
        if metric.value_property
        else "value",
    }


def metric_event_columns(
    aliases: dict[tuple, str], dialect: Dialect
) -> tuple[list[EventColumn], dict[str, object]]:
    """The property columns' SQL and their parameters (``q0``, ``q1``, ...: every property
    name and filter value is bound)."""
    params: dict[str, object] = {}

    def bind(value: object) -> str:
        name = f"q{len(params)}"
        params[name] = value
        return dialect.param(name)

    sql = PropertySQL(dialect, "e.properties", bind)
    columns = [
        EventColumn(alias, kind, sql.predicate(spec) if kind == "match" else sql.number(spec), code)
        for (code, kind, spec), alias in aliases.items()
    ]
    return columns, params


def event_names(metrics: Sequence["MetricSpec"]) -> list[str]:
    names: list[str] = []
    for m in metrics:
        for name in (m.event_name, m.denominator_event if m.kind == "ratio" else ""):
            if name and name not in names:
                names.append(name)
    return names
