"""Reads for the service hot path: a project's experiments as pure assignment specs."""

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from bucketing.payload import ExperimentSpec, build_payload, etag
from core.cache import ProcessCache
from core.errors import DomainError
from experiments.holdouts import (
    ServedHoldout,
    holdout_changed_at,
    holdout_version_sql,
    served_holdout,
)
from experiments.models import Environment, Experiment, ExperimentStatus, Metric, Project
from experiments.selectors import experiment_spec
from flags.selectors import environment_flags

logger = logging.getLogger(__name__)

SERVED_STATUSES = (
    ExperimentStatus.RUNNING,
    ExperimentStatus.PAUSED,
    ExperimentStatus.ROLLED_BACK,
    ExperimentStatus.CONCLUDED,
)


@dataclass(frozen=True)
class ProjectSpecs:
    """Everything /assign, /events and /features need about a project's non-draft experiments.

    ``specs`` holds the experiments that can be served; one whose definition is inconsistent is
    left out of it (and logged) so it never breaks the others, but stays in ``experiment_ids``
    and ``variant_ids`` so its late exposures are still accepted.
    """

    version: tuple  # an opaque token: equal tokens mean nothing changed
    specs: dict[str, ExperimentSpec]
    experiment_ids: dict[str, int]
    variant_ids: dict[tuple[str, str], int]
    statuses: dict[str, str]
    phases: dict[str, int] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # key -> why it is not served
    updated_at: datetime | None = None  # the latest change of a served experiment
    # key -> when the current phase started: analyses count exposures from then on.
    phase_starts: dict[str, datetime] = field(default_factory=dict)
    # key -> "id.created.phase": the experiment's phase as the assignment cache names it
    # (services/assignment_cache.py; the creation time tells apart experiments given an id again)
    assignment_tags: dict[str, str] = field(default_factory=dict)
    # The project's running holdout: its units get no experiment (docs/flags.md "Holdout").
    holdout: ServedHoldout | None = None


_specs: ProcessCache[ProjectSpecs] = ProcessCache("project specs")
_payloads: dict[int, tuple[tuple, dict[str, Any], str]] = {}
_environment_payloads: dict[int, tuple[tuple, dict[str, Any], str]] = {}
_lock = threading.Lock()


def _version(project: Project) -> tuple:
    # One cheap query tells whether any definition changed (any process may edit): every
    # lifecycle service saves the experiment, which bumps updated_at. It runs when the serving
    # generation changed or the cached specs are a few seconds old (core/cache.py). Raw SQL: the
    # ORM would spend longer compiling it than the database running it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MAX(updated_at), COUNT(*), "
            + holdout_version_sql("%s")
            + " FROM experiments_experiment WHERE project_id = %s",
            [project.pk, project.pk, project.pk],
        )
        return tuple(cursor.fetchone())


def project_specs(project: Project) -> ProjectSpecs:
    """The project's served experiments, kept in the process (`core.cache.ProcessCache`: no
    query while the serving generation is unchanged) and rebuilt only when a definition
    changed (the version query)."""
    return _specs.get_versioned(
        project.pk, lambda: _version(project), lambda version: _build_specs(project, version)
    )


def _build_specs(project: Project, version: tuple) -> ProjectSpecs:
    specs: dict[str, ExperimentSpec] = {}
    experiment_ids: dict[str, int] = {}
    variant_ids: dict[tuple[str, str], int] = {}
    statuses: dict[str, str] = {}
    phases: dict[str, int] = {}
    phase_starts: dict[str, datetime] = {}
    assignment_tags: dict[str, str] = {}
    broken: dict[str, str] = {}
    holdout = served_holdout(project.pk)  # kept out of every experiment
    updated_at: datetime | None = holdout_changed_at(project.pk)
    experiments = (
        Experiment.objects.filter(project=project)
        .exclude(status=ExperimentStatus.DRAFT)
        .select_related("segment")
        .prefetch_related("variants")
    )
    for experiment in experiments:
        variants = list(experiment.variants.all())  # ordered by position: fixes the ranges
        experiment_ids[experiment.key] = experiment.pk
        statuses[experiment.key] = experiment.status
        phases[experiment.key] = experiment.phase
        created_us = int(experiment.created_at.timestamp() * 1_000_000)
        assignment_tags[experiment.key] = f"{experiment.pk}.{created_us}.{experiment.phase}"
        phase_start = experiment.phase_started_at or experiment.started_at
        if phase_start is not None:
            phase_starts[experiment.key] = phase_start
        if updated_at is None or experiment.updated_at > updated_at:
            updated_at = experiment.updated_at
        for v in variants:
            variant_ids[(experiment.key, v.key)] = v.pk
        try:
            specs[experiment.key] = experiment_spec(
                experiment, variants, holdout.spec if holdout else None
            )
        except ValueError as exc:
            broken[experiment.key] = str(exc)
            logger.error(
                "Not serving experiment %s of project %s: %s", experiment.key, project.slug, exc
            )
    return ProjectSpecs(
        version,
        specs,
        experiment_ids,
        variant_ids,
        statuses,
        phases,
        broken,
        updated_at,
        phase_starts,
        assignment_tags,
        holdout=holdout,
    )


def features_payload(project: Project) -> tuple[dict[str, Any], str]:
    """The GrowthBook features payload of the project and its ETag, rebuilt only on change."""
    specs = project_specs(project)
    cached = _payloads.get(project.pk)
    if cached is not None and cached[0] == specs.version:
        return cached[1], cached[2]
    payload = build_payload(specs.specs.values(), date_updated=specs.updated_at)
    tag = etag(payload)
    with _lock:
        _payloads[project.pk] = (specs.version, payload, tag)
    return payload, tag


def features_payload_for(environment: Environment) -> tuple[dict[str, Any], str]:
    """The GrowthBook payload served to an environment's client key, and its ETag.

    Production serves the project's experiments and the environment's flags; other environments
    serve their flags only. Rebuilt only when the experiments' or the flags' version changed
    (one cheap query otherwise: the flags' version covers the project's experiments too, since
    experiment rules serve them), so the SDK endpoints and the streams' watcher
    (assignments/streaming.py) can ask as often as they like. ``dateUpdated`` is the latest
    change of what is served."""
    flags = environment_flags(environment)
    version = flags.version
    cached = _environment_payloads.get(environment.pk)
    if cached is not None and cached[0] == version:
        return cached[1], cached[2]
    experiments = project_specs(environment.project) if environment.production else None
    changes = [flags.updated_at, experiments.updated_at if experiments else None]
    payload = build_payload(
        experiments.specs.values() if experiments else (),
        flags=flags.specs.values(),
        date_updated=max((c for c in changes if c is not None), default=None),
    )
    tag = etag(payload)
    with _lock:
        _environment_payloads[environment.pk] = (version, payload, tag)
    return payload, tag


# --- planning: a metric's recent baseline ---------------------------------------------------


@dataclass(frozen=True)
class MetricBaseline:
    metric: str
    kind: str
    days: int  # the window asked for
    since: datetime
    through: datetime
    window_hours: int  # the metric's conversion window, counted from each unit's first activity
    units: int  # units first active in [since, through - window_hours]
    daily_units: float  # units / (days - window_hours / 24)
    mean: float | None  # per-unit mean (binomial: rate; ratio: sum / den_sum); None without units
    variance: float | None  # per-unit variance as the analysis computes it (delta method: ratio)


def _baseline_sql(window_hours: int, kind: str) -> str:
    """One statement: per-unit values of the metric over the cohort, summed (see
    ``metric_baseline``). Dialect: timestamps compare exactly on both backends (SQLite stores
    'YYYY-MM-DD HH:MM:SS[.ffffff]' text, turned into integer microseconds for the arithmetic)."""
    from assignments.models import Exposure, MetricEvent

    postgres = connection.vendor == "postgresql"

    def instant(column: str) -> str:
        if postgres:
            return column
        return (
            f"(CAST(strftime('%%s', {column}) AS INTEGER) * 1000000"
            f" + CAST(substr({column}, 21, 6) AS INTEGER))"
        )

    hours = int(window_hours)
    if postgres:
        end = f"(c.t0 + INTERVAL '{hours} hours')"
    else:
        end = f"({instant('c.t0')} + {hours * 3_600_000_000})"
    value = {
        "binomial": "CASE WHEN v_count > 0 THEN 1 ELSE 0 END",
        "count": "v_count",
    }.get(kind, "v_sum")
    exposures, events = Exposure._meta.db_table, MetricEvent._meta.db_table
    return f"""
        WITH activity AS (
            SELECT unit_id, ts FROM {exposures}
            WHERE project_id = %(project)s AND ts >= %(since)s AND ts <= %(through)s
            UNION ALL
            SELECT unit_id, ts FROM {events}
            WHERE project_id = %(project)s AND ts >= %(since)s AND ts <= %(through)s
        ),
        cohort AS (
            SELECT unit_id, MIN(ts) AS t0 FROM activity
            GROUP BY unit_id HAVING MIN(ts) <= %(last_start)s
        ),
        per_unit AS (
            SELECT
                c.unit_id,
                SUM(CASE WHEN e.name = %(numerator)s THEN e.value ELSE 0 END) AS v_sum,
                SUM(CASE WHEN e.name = %(numerator)s THEN 1 ELSE 0 END) AS v_count,
                SUM(CASE WHEN e.name = %(denominator)s THEN e.value ELSE 0 END) AS d_sum
            FROM cohort c
            LEFT JOIN {events} e
                ON e.project_id = %(project)s
                AND e.unit_id = c.unit_id
                AND e.name IN (%(numerator)s, %(denominator)s)
                AND {instant("e.ts")} >= {instant("c.t0")}
                AND {instant("e.ts")} < {end}
            GROUP BY c.unit_id
        ),
        vals AS (SELECT {value} AS y, d_sum AS d FROM per_unit)
        SELECT COUNT(*), SUM(y), SUM(y * y), SUM(d), SUM(d * d), SUM(y * d) FROM vals
    """


def metric_baseline(metric: Metric, days: int = 14, now: datetime | None = None) -> MetricBaseline:
    """The metric's per-unit mean and variance over the last ``days`` days, for the calculator.

    Units: every unit with an exposure (any experiment of the project) or any metric event of
    the project in [since, through], where through = now and since = now - days. A unit's start
    t0 is its first such activity; only units with t0 <= through - conversion window are kept,
    so each has a complete window. Its value, as the analysis computes it, from the metric's
    events with t0 <= ts < t0 + window: binomial 1 if any (else 0), count the number, mean the
    sum of values, ratio the sum over the sum of the denominator event's values. Units without
    events count with 0. Everything is summed in SQL (n, sum, sum of squares and, for ratio,
    the denominator's and the cross sums); the mean and variance are those of
    ``stats.estimators.arm_estimate`` (p (1 - p) for binomial, the sample variance
    for mean and count, the delta method for ratio). Raises ValueError when ``days`` does not
    exceed the conversion window."""
    from stats.estimators import SampleStats, arm_estimate

    if metric.filters or metric.value_property:
        # The property SQL lives with the aggregation (analysis/sql/properties.py), a layer up.
        raise DomainError(
            f"Metric '{metric.key}' is computed from event properties (filters or "
            "value_property): its recent baseline is not available; enter the baseline in the "
            "calculator by hand.",
            "filters",
        )
    window = int(metric.conversion_window_hours)
    if days * 24 <= window:
        raise ValueError(
            f"days must exceed the metric's conversion window ({window} hours), so that units "
            f"first seen in the window have it complete"
        )
    through = now or timezone.now()
    since = through - timedelta(days=days)
    last_start = through - timedelta(hours=window)

    def ts(value: datetime) -> object:
        if connection.vendor == "postgresql":
            return value
        return connection.ops.adapt_datetimefield_value(value)

    params = {
        "project": metric.project_id,
        "since": ts(since),
        "through": ts(through),
        "last_start": ts(last_start),
        "numerator": metric.event_name,
        "denominator": metric.denominator_event if metric.kind == "ratio" else metric.event_name,
    }
    with connection.cursor() as cursor:
        cursor.execute(_baseline_sql(window, metric.kind), params)
        n, total, total_sq, den, den_sq, prod = cursor.fetchone()
    n = int(n or 0)
    mean = variance = None
    if n:
        sample = SampleStats(
            n=n,
            sum=float(total or 0),
            sum_sq=float(total_sq or 0),
            den_sum=float(den or 0),
            den_sum_sq=float(den_sq or 0),
            sum_prod=float(prod or 0),
        )
        estimate = arm_estimate(sample, metric.kind)
        mean, variance = estimate.mean, estimate.variance
    span_days = days - window / 24.0
    return MetricBaseline(
        metric=metric.key,
        kind=metric.kind,
        days=days,
        since=since,
        through=through,
        window_hours=window,
        units=n,
        daily_units=n / span_days,
        mean=mean,
        variance=variance,
    )
