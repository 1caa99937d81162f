"""SQL that turns raw events into per-variant sufficient statistics (no raw rows to Python).

Per unit: the unit's first exposure (in the current phase, up to the cut-off) fixes its variant
and its start time; units exposed to more than one variant are excluded and counted. The unit's
metric value is the sum of its events with ``first_exposure <= ts < first_exposure + window``
(0/1 for binomial: did it convert), and the CUPED covariate is the same sum over the window
before the first exposure. Then, per variant: n, sum, sum of squares and the cross-products.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection

from analysis.stats import SampleStats


@dataclass(frozen=True)
class MetricSpec:
    key: str
    kind: str
    event_name: str
    denominator_event: str
    window_hours: float
    winsorize_quantile: float | None
    cuped: bool


@dataclass(frozen=True)
class ExposureCounts:
    units_by_variant: dict[int, int]  # single-variant units per variant id
    multi_variant_units: int


def _hours_after(column: str, hours_param: str = "%s") -> str:
    """SQL for `column + hours` as a comparable value, per database."""
    if connection.vendor == "postgresql":
        return f"({column} + make_interval(secs => {hours_param} * 3600.0))"
    return f"(julianday({column}) + {hours_param} / 24.0)"


def _ts(column: str) -> str:
    return column if connection.vendor == "postgresql" else f"julianday({column})"


def _param_ts(value: datetime) -> object:
    if connection.vendor == "postgresql":
        return value
    # Django stores SQLite datetimes as naive UTC text.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _units_cte(vendor_ts: str) -> str:
    return f"""
    first_exposure AS (
        SELECT unit_id, MIN(ts) AS first_ts, MIN(variant_id) AS variant_id,
               COUNT(DISTINCT variant_id) AS n_variants
        FROM assignments_exposure
        WHERE experiment_id = %s
          AND {vendor_ts} >= {_placeholder()} AND {vendor_ts} <= {_placeholder()}
        GROUP BY unit_id
    )"""


def _placeholder() -> str:
    return "%s" if connection.vendor == "postgresql" else "julianday(%s)"


def exposure_counts(experiment_id: int, since: datetime, through: datetime) -> ExposureCounts:
    sql = (
        f"WITH {_units_cte(_ts('ts'))} "
        + """
        SELECT variant_id, n_variants > 1 AS multi, COUNT(*) FROM first_exposure
        GROUP BY variant_id, n_variants > 1
    """
    )
    by_variant: dict[int, int] = {}
    multi = 0
    with connection.cursor() as cursor:
        cursor.execute(sql, [experiment_id, _param_ts(since), _param_ts(through)])
        for variant_id, is_multi, count in cursor.fetchall():
            if is_multi:
                multi += count
            else:
                by_variant[variant_id] = by_variant.get(variant_id, 0) + count
    return ExposureCounts(by_variant, multi)


def metric_sufficient_stats(
    *,
    experiment_id: int,
    project_id: int,
    metric: MetricSpec,
    since: datetime,
    through: datetime,
) -> dict[int, SampleStats]:
    """Per-variant sufficient statistics of one metric, keyed by variant id."""
    value = "SUM(CASE WHEN {ts} >= {start} AND {ts} < {end} THEN e.value END)"
    cov = "SUM(CASE WHEN {ts} < {start} AND {ts} >= {before} THEN e.value END)"
    count = "COUNT(CASE WHEN {ts} >= {start} AND {ts} < {end} THEN 1 END)"
    start = _ts("u.first_ts")
    fmt = {
        "ts": _ts("e.ts"),
        "start": start,
        "end": _hours_after("u.first_ts"),
        "before": _hours_after("u.first_ts", "-%s"),
    }
    cov_count = cov.format(**fmt).replace("SUM(", "COUNT(").replace("e.value", "1")
    if metric.kind == "binomial":
        per_unit = f"CASE WHEN {count.format(**fmt)} > 0 THEN 1.0 ELSE 0.0 END"
        covariate = f"CASE WHEN {cov_count} > 0 THEN 1.0 ELSE 0.0 END"
    elif metric.kind == "count":
        per_unit = f"{count.format(**fmt)} * 1.0"
        covariate = f"{cov_count} * 1.0"
    else:
        per_unit = f"COALESCE({value.format(**fmt)}, 0.0)"
        covariate = f"COALESCE({cov.format(**fmt)}, 0.0)"
    params: list[object] = [experiment_id, _param_ts(since), _param_ts(through)]
    # Placeholders appear in this order in per_unit then covariate: count the windows.
    sql = f"""
    WITH {_units_cte(_ts("ts"))},
    units AS (SELECT unit_id, first_ts, variant_id FROM first_exposure WHERE n_variants = 1),
    per_unit AS (
        SELECT u.variant_id, {per_unit} AS v, {covariate} AS c
        FROM units u
        LEFT JOIN assignments_metricevent e
          ON e.project_id = %s AND e.name = %s AND e.unit_id = u.unit_id
         AND {_ts("e.ts")} <= {_placeholder()}
        GROUP BY u.unit_id, u.variant_id, u.first_ts
    )
    SELECT variant_id, COUNT(*), COALESCE(SUM(v), 0), COALESCE(SUM(v * v), 0),
           COALESCE(SUM(c), 0), COALESCE(SUM(c * c), 0), COALESCE(SUM(v * c), 0)
    FROM per_unit GROUP BY variant_id
    """
    window_params = [metric.window_hours] * (per_unit.count("%s") + covariate.count("%s"))
    params += window_params + [project_id, metric.event_name, _param_ts(through)]
    out: dict[int, SampleStats] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for variant_id, n, s, ss, cs, css, cp in cursor.fetchall():
            out[variant_id] = SampleStats(
                n=int(n),
                sum=float(s),
                sum_sq=float(ss),
                cov_sum=float(cs),
                cov_sum_sq=float(css),
                cov_sum_prod=float(cp),
            )
    return out
