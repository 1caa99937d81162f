"""What the incremental analysis stores for an experiment, and the settings its statements run
with: shared by the refresh (analysis/incremental.py) and the snapshot's read
(analysis/incremental_read.py).

A ``Plan`` maps the experiment's supported metrics to the stored rows' slots (slot i holds
``metrics[i]``; at most ``SLOTS``) and carries their statements' columns and the ``signature``
(the phase start and the metric definitions) that decides whether stored rows still fit.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from analysis import aggregation, unit_columns
from analysis.aggregation import MetricSpec
from analysis.sql import incremental as sql
from analysis.sql.builders import INDEX_LOOKUP
from analysis.sql.dialects import Dialect
from analysis.unit_aggregates import SLOTS

KINDS = ("binomial", "count", "mean", "ratio")
# What the stored rows follow of a MetricSpec; a metric that sets any other field (property
# filters, a value property, ...) is left to the full statement.
STORED_FIELDS = frozenset(
    ("key", "kind", "event_name", "denominator_event", "window_hours", "winsorize_quantile")
    + ("cuped",)
)


def supported(metric: MetricSpec) -> bool:
    """Whether the stored rows can hold the metric exactly."""
    plain = MetricSpec(key="", kind="", event_name="")
    return metric.kind in KINDS and all(
        getattr(metric, f.name) == getattr(plain, f.name)
        for f in fields(MetricSpec)
        if f.name not in STORED_FIELDS
    )


@dataclass(frozen=True)
class Plan:
    """The stored metrics of an experiment (slot i holds ``metrics[i]``) and their SQL."""

    metrics: tuple[MetricSpec, ...]
    names: tuple[str, ...]
    stored: sql.Stored
    definitions: list[dict]
    signature: str

    def params(self, d: Dialect, window: dict[str, Any], **watermarks: int) -> dict[str, Any]:
        """The statements' parameters for ``window`` (experiment_id, project_id, since,
        through) and the given watermarks (``x_lo``, ``x_hi``, ``e_lo``, ``e_hi``)."""
        since, widest = window["since"], self.stored.windows[-1]
        return {
            "experiment": window["experiment_id"],
            "project": window["project_id"],
            "since": d.param_ts(since),
            "through": d.param_ts(window["through"]),
            "earliest": d.param_ts(since - timedelta(hours=widest)),
            **{f"name{i}": name for i, name in enumerate(self.names)},
            **watermarks,
        }


def plan_for(metrics: Sequence[MetricSpec], since: datetime) -> Plan | None:
    """The plan of the supported metrics among ``metrics`` (the first SLOTS); None if none."""
    chosen = tuple(m for m in metrics if supported(m))[:SLOTS]
    if not chosen:
        return None
    names = unit_columns.event_names(chosen)
    codes = {name: i for i, name in enumerate(names)}
    # Stored: every covariate (CUPED may be turned on later), nothing capped (caps are computed
    # when reading), a binomial's events counted (every column adds up; read as 0 or 1).
    storage = [
        replace(
            m,
            kind="count" if m.kind == "binomial" else m.kind,
            cuped=True,
            winsorize_quantile=None,
        )
        for m in chosen
    ]
    columns = [unit_columns.metric_columns(i, m, codes) for i, m in enumerate(storage)]
    binary = [m.kind == "binomial" for m in chosen]
    windows = sorted({int(m.window_hours) for m in chosen})
    definitions = [
        {
            "key": m.key,
            "kind": m.kind,
            "event_name": m.event_name,
            "denominator_event": m.denominator_event if m.kind == "ratio" else "",
            "window_hours": int(m.window_hours),
        }
        for m in chosen
    ]
    signed = json.dumps(
        {"since": since.astimezone(UTC).isoformat(), "metrics": definitions}, sort_keys=True
    )
    return Plan(
        metrics=chosen,
        names=tuple(names),
        stored=sql.Stored(columns, binary, windows, len(names)),
        definitions=definitions,
        signature=hashlib.sha256(signed.encode()).hexdigest(),
    )


def tune_statements(d: Dialect) -> tuple[str, str] | None:
    """PostgreSQL: settings for the rest of the transaction: JIT compilation off (it costs a few
    tenths of a second per statement, more than these statements take) and the analysis'
    ``work_mem`` (``ABACUS_ANALYSIS_WORK_MEM``, as the snapshot's read has: sorting a round's
    new events by unit, and keeping the rows an update returns, fit in memory instead of
    spilling to temporary files). Returns the settings to restore."""
    if d.vendor != "postgresql":
        return None
    work_mem = settings.ABACUS_ANALYSIS_WORK_MEM  # validated in config/settings.py
    with d.connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('jit'), current_setting('work_mem'), "
            "set_config('jit', 'off', true), set_config('work_mem', %s, true)",
            [work_mem],
        )
        jit, previous_work_mem, _, _ = cursor.fetchone()
        return jit, previous_work_mem


def restore_tuning(d: Dialect, previous: tuple[str, str] | None) -> None:
    """Put back the settings ``tune_statements`` changed."""
    if previous is not None:
        with d.connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('jit', %s, true), set_config('work_mem', %s, true)",
                list(previous),
            )


def lateral_lookups(d: Dialect) -> bool:
    """Read a few units' events by index lookups (as the full statement's INDEX_LOOKUP)."""
    return d.supports_index_lookup and aggregation.read_strategy() == INDEX_LOOKUP


def window_of(experiment_id: int, project_id: int, since: datetime, through: datetime) -> dict:
    """What the statements are about (``Plan.params``; ``aggregation.experiment_aggregates``'s
    keyword arguments but the metrics)."""
    return {
        "experiment_id": experiment_id,
        "project_id": project_id,
        "since": since,
        "through": through,
    }
