"""The pandas baseline of `manage.py benchmark analyze` (bench/analyze.py), run in the child
process: ``pandas.read_sql`` of the experiment's exposures and metric events, then the same
per-unit windows, winsorization, CUPED sums and per-variant sufficient statistics as the SQL
aggregation (no statistics, no writes). Its sums are compared with the snapshot's rows."""

import time
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from bench.analyze_data import WINDOW_HOURS


def child_pandas(experiment_id: int, through: str) -> dict[str, Any]:
    """Load the rows and aggregate them; seconds (load included), load seconds and the rows."""
    from experiments.models import Experiment

    experiment = Experiment.objects.get(pk=experiment_id)
    variants = {v.pk: v.key for v in experiment.variants.all()}
    cutoff = datetime.fromisoformat(through)
    started = time.perf_counter()
    exposures, events = _load(experiment, cutoff)
    loaded = time.perf_counter() - started
    units = _units(exposures)
    columns = _columns(events, units)
    rows = _sufficient_statistics(columns, units["vmin"].to_numpy(), variants)
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": loaded,
        "rows_loaded": len(exposures) + len(events),
        "rows": rows,
    }


def _load(experiment: Any, cutoff: datetime) -> tuple[Any, Any]:
    """(exposures, events) as DataFrames, read with ``pandas.read_sql`` on the raw connection."""
    import pandas as pd

    since = experiment.phase_started_at
    raw = connection.connection
    mark = "%s" if connection.vendor == "postgresql" else "?"
    if connection.vendor == "postgresql":
        args: list[Any] = [since, cutoff]
    else:
        args = [connection.ops.adapt_datetimefield_value(x) for x in (since, cutoff)]
    exposures = pd.read_sql(
        "SELECT unit_id, variant_id, ts, assignment_mismatch FROM assignments_exposure "
        f"WHERE experiment_id = {mark} AND ts >= {mark} AND ts <= {mark}",
        raw,
        params=[experiment.pk, *args],
        parse_dates={"ts": {"utc": True, "format": "ISO8601"}},
    )
    earliest = since - timedelta(hours=WINDOW_HOURS)
    if connection.vendor != "postgresql":
        earliest = connection.ops.adapt_datetimefield_value(earliest)
    events = pd.read_sql(
        "SELECT unit_id, name, value, ts FROM assignments_metricevent "
        f"WHERE project_id = {mark} AND name IN ({mark}, {mark}, {mark}) "
        f"AND ts >= {mark} AND ts <= {mark}",
        raw,
        params=[experiment.project_id, "purchase", "click", "page_view", earliest, args[1]],
        parse_dates={"ts": {"utc": True, "format": "ISO8601"}},
    )
    return exposures, events


def _units(exposures: Any) -> Any:
    """One row per analysable unit (a single variant, no assignment mismatch): first exposure
    ``t0`` and variant ``vmin``."""
    exposures["assignment_mismatch"] = exposures["assignment_mismatch"].astype(bool)
    units = exposures.groupby("unit_id").agg(
        t0=("ts", "min"),
        vmin=("variant_id", "min"),
        vmax=("variant_id", "max"),
        mismatch=("assignment_mismatch", "max"),
    )
    return units[(units.vmin == units.vmax) & ~units.mismatch]


def _columns(events: Any, units: Any) -> dict[str, tuple[Any, Any, Any]]:
    """Per metric, per-unit arrays (value, CUPED covariate or None, denominator or None)."""
    import numpy as np
    import pandas as pd

    window = pd.Timedelta(hours=WINDOW_HOURS)
    joined = events.merge(units[["t0"]], left_on="unit_id", right_index=True)
    dt = joined["ts"] - joined["t0"]
    post = (dt >= pd.Timedelta(0)) & (dt < window)
    pre = (dt < pd.Timedelta(0)) & (dt >= -window)

    def per_unit(mask: Any, how: str) -> Any:
        picked = joined.loc[mask]
        grouped = picked.groupby("unit_id")["value"]
        series = grouped.size().astype(float) if how == "count" else grouped.sum()
        if how == "any":
            series = (series > 0).astype(float)
        return series.reindex(units.index, fill_value=0.0).to_numpy()

    is_purchase = joined["name"] == "purchase"
    columns = {
        "purchase": (
            per_unit(post & is_purchase, "any"),
            per_unit(pre & is_purchase, "any"),
            None,
        ),
        "revenue": (per_unit(post & is_purchase, "sum"), per_unit(pre & is_purchase, "sum"), None),
        "ctr": (
            per_unit(post & (joined["name"] == "click"), "sum"),
            None,
            per_unit(post & (joined["name"] == "page_view"), "sum"),
        ),
    }
    value, cov, _ = columns["revenue"]
    columns["revenue"] = (
        np.minimum(value, np.quantile(value, 0.99)),
        np.minimum(cov, np.quantile(cov, 0.99)),
        None,
    )
    return columns


def _sufficient_statistics(
    columns: dict[str, tuple[Any, Any, Any]], variant_of: Any, variants: dict[int, str]
) -> dict[str, list]:
    """``metric/variant`` -> [n, sum, sum_sq, den_sum, cov_sum, sum_prod], as the snapshot's
    rows hold them."""
    rows = {}
    for key, (v, c, d) in columns.items():
        for variant_id, variant_key in variants.items():
            m = variant_of == variant_id
            rows[f"{key}/{variant_key}"] = [
                int(m.sum()),
                float(v[m].sum()),
                float((v[m] ** 2).sum()),
                float(d[m].sum()) if d is not None else 0.0,
                float(c[m].sum()) if c is not None else 0.0,
                float((v[m] * d[m]).sum()) if d is not None else 0.0,
            ]
    return rows
