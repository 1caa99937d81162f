"""Incremental analysis: a snapshot reads what changed since the last one, not every event.

The full metrics statement (analysis/aggregation.py) reads all of an experiment's exposures and
events at every snapshot. This module keeps its ``per_unit`` step stored instead, one row per
exposed unit (``UnitAggregate``; analysis/unit_aggregates.py), and brings the rows up to date
from the rows added to the event tables since (by id, whatever their timestamps):

1. ``refresh`` (on the primary, before the snapshot's read): a safe watermark on the event
   tables' ids (analysis/watermarks.py: no event at or below it can commit later); the metric
   events with ids between the old and the new watermark are added to their units' rows (a
   count or sum grows, a binomial becomes 1); then the units whose t0 or state may have changed
   are recomputed from their events: those with a new exposure (it may move t0 earlier or add a
   second variant) and those whose ``pending`` timestamp (an exposure, or an event in the
   window, stamped after the previous cut-off) the new cut-off has reached.
2. ``experiment_aggregates`` (in the snapshot's consistent read): the winsorization caps and the
   per-variant sums from the stored rows (one row per unit); units with rows above the
   watermark (committed since step 1) are computed from their events in the same statement. The
   result is the full statement's for the same cut-off and the same events.

The full statement stays the reference and the fallback: it computes the snapshot when the
incremental path is off (``ABACUS_INCREMENTAL_AGGREGATES``), for a backfill or any cut-off
before the stored rows' (a past cut-off), for metrics the rows do not hold (property filters
or value properties, beyond ``SLOTS`` metrics; the other metrics still come from the rows), and
when a step fails on the data (logged). The first snapshot, a new phase or a changed metric
definition (the state's ``signature``) rebuilds the rows, as does
``manage.py rebuild_aggregates`` (repairs: after deleting or restoring events).
"""

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.utils import timezone

from analysis import aggregation, watermarks
from analysis.aggregation import ExperimentAggregates, MetricAggregate, MetricSpec
from analysis.models import AggregateState, ResultRow, ResultSnapshot
from analysis.sql import incremental as sql
from analysis.sql.builders import CLEAN, INDEX_LOOKUP
from analysis.sql.dialects import Dialect, dialect_for
from analysis.sql.incremental import SUMS_PER_SLOT
from analysis.unit_aggregates import SLOTS
from analysis.watermarks import Watermark
from core.replica import read_alias
from experiments.models import Experiment
from stats import SampleStats

logger = logging.getLogger(__name__)

REBUILD_CHUNK = 50_000  # units per transaction of a rebuild
REBUILD_WAIT_SECONDS = 30.0  # for the writers in progress when a rebuild starts
KINDS = ("binomial", "count", "mean", "ratio")
# What the stored rows follow of a MetricSpec; a metric that sets any other field (property
# filters, a value property, ...) is left to the full statement.
STORED_FIELDS = frozenset(
    ("key", "kind", "event_name", "denominator_event", "window_hours", "winsorize_quantile")
    + ("cuped",)
)


class Superseded(Exception):
    """Another rebuild of the same experiment started after this one."""


def enabled() -> bool:
    return bool(getattr(settings, "ABACUS_INCREMENTAL_AGGREGATES", True))


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
    names = aggregation._event_names(chosen)
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
    columns = [aggregation._columns(i, m, codes) for i, m in enumerate(storage)]
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


def _without_jit(d: Dialect) -> str | None:
    """PostgreSQL: turn JIT compilation off for the rest of the transaction (it costs a few
    tenths of a second per statement, more than these statements take); returns the setting
    to restore."""
    if d.vendor != "postgresql":
        return None
    with d.connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit'), set_config('jit', 'off', true)")
        return cursor.fetchone()[0]


def _restore_jit(d: Dialect, setting: str | None) -> None:
    if setting is not None:
        with d.connection.cursor() as cursor:
            cursor.execute("SELECT set_config('jit', %s, true)", [setting])


def _lateral(d: Dialect) -> bool:
    """Read a few units' events by index lookups (as the full statement's INDEX_LOOKUP)."""
    return d.supports_index_lookup and aggregation.read_strategy() == INDEX_LOOKUP


# --- 1. bring the stored rows up to date ------------------------------------------------------


def refresh(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
) -> bool:
    """Bring the experiment's stored rows up to the cut-off ``through`` and the events committed
    now (rebuilding them if they are missing or were computed for other metrics or another
    phase), on the primary. Returns whether the snapshot can read them
    (``experiment_aggregates``); False: compute it with the full statement."""
    if not enabled():
        return False
    plan = plan_for(metrics, since)
    if plan is None:
        return False
    d = dialect_for(connections[DEFAULT_DB_ALIAS])
    if not _statements_see_new_rows(d):
        logger.info("experiment %s: inside a snapshot transaction; full statement", experiment_id)
        return False
    window = _window(experiment_id, project_id, since, through)
    try:
        with transaction.atomic():
            _without_jit(d)
            state = _locked_state(d, experiment_id)
            if state is not None and state.ready and state.signature == plan.signature:
                if through < state.through:
                    logger.info(
                        "experiment %s: cut-off %s is before the stored rows' (%s): full statement",
                        experiment_id,
                        through.isoformat(),
                        state.through.isoformat(),
                    )
                    return False
                _advance(d, plan, state, window)
                return True
        _rebuild(d, plan, window)
        return True
    except (DatabaseError, Superseded) as exc:
        if isinstance(exc, DatabaseError) and not d.is_per_metric_failure(exc):
            raise
        logger.warning(
            "experiment %s: the stored aggregates could not be brought up to date (%s); "
            "full statement",
            experiment_id,
            exc,
        )
        return False


def _statements_see_new_rows(d: Dialect) -> bool:
    """Whether each statement of ours will see the rows committed before it (the watermark's
    proof needs it): PostgreSQL READ COMMITTED, not inside a REPEATABLE READ transaction."""
    if d.vendor != "postgresql" or not d.connection.in_atomic_block:
        return True
    with d.connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        return cursor.fetchone()[0] == "read committed"


def _locked_state(d: Dialect, experiment_id: int) -> AggregateState | None:
    """The experiment's state, locked until the transaction ends (on SQLite: the database's
    write lock, taken by a write, so that two refreshes do not both read the old watermark)."""
    if d.vendor == "sqlite":
        with d.connection.cursor() as cursor:
            cursor.execute(
                "UPDATE analysis_aggregatestate SET generation = generation "
                "WHERE experiment_id = %s",
                [experiment_id],
            )
    return AggregateState.objects.select_for_update().filter(experiment_id=experiment_id).first()


def _wait_seconds() -> float:
    return float(getattr(settings, "ABACUS_AGGREGATES_WAIT_SECONDS", 2.0))


def _window(experiment_id: int, project_id: int, since: datetime, through: datetime) -> dict:
    """What the statements are about (``Plan.params``; ``aggregation.experiment_aggregates``'s
    keyword arguments but the metrics)."""
    return {
        "experiment_id": experiment_id,
        "project_id": project_id,
        "since": since,
        "through": through,
    }


def _advance(d: Dialect, plan: Plan, state: AggregateState, window: dict[str, Any]) -> None:
    """Add the events up to the new safe watermark and recompute the units whose t0 or state
    may have changed, keeping the per-variant sums with the rows; then record the watermark
    and the cut-off (the caller's transaction)."""
    old = Watermark(state.exposure_watermark, state.event_watermark)
    new, candidates = watermarks.advance(d.connection, old, state.candidates, _wait_seconds())
    through = window["through"]
    params = plan.params(
        d, window, x_lo=old.exposure, x_hi=new.exposure, e_lo=old.event, e_hi=new.event
    )
    s, totals, written = plan.stored, Sums.load(state.sums), 0
    with d.connection.cursor() as cursor:
        if new.event > old.event:
            written += _add_events(d, s, cursor, params, totals)
        if new.exposure > old.exposure or through > state.through:
            written += _store_changed_units(d, s, cursor, params, totals)
        state.sums_age += written
        if state.sums_age > max(totals.units(), 1000):
            # Bound the rounding the differences accumulate: sum the rows anew (amortized:
            # at most once per as many rows written as there are units).
            cursor.execute(sql.stored_sums_sql(s), params)
            totals, state.sums_age = Sums.from_rows(cursor.fetchall()), 0
    state.sums = totals.dump()
    state.exposure_watermark, state.event_watermark = new.exposure, new.event
    state.candidates = candidates
    state.through = through
    state.save(
        update_fields=[
            "exposure_watermark",
            "event_watermark",
            "candidates",
            "through",
            "sums",
            "sums_age",
            "updated_at",
        ]
    )


def _add_events(d: Dialect, s: sql.Stored, cursor: Any, params: dict, totals: "Sums") -> int:
    """Add the new events to the stored rows, and what that changed to ``totals``; returns
    how many rows changed."""
    ctes, update, units = sql.add_events_sql(d, s, lateral=d.supports_index_lookup)
    if d.vendor == "postgresql":
        differences = sql.sums(s.stored_pairs(), s.stored_pairs(before=True))
        returning = sql.returned(s, added=True)
        cursor.execute(sql.sums_of_returned(ctes, update, returning, differences), params)
        return totals.add_written(cursor.fetchall())
    # SQLite: a RETURNING clause cannot read the UPDATE's FROM: the units' sums before and after.
    before = f"WITH {ctes} {sql.stored_sums_sql(s, units)}"
    cursor.execute(before, params)
    totals.add(cursor.fetchall(), sign=-1)
    cursor.execute(f"WITH {ctes} {update}", params)
    written = cursor.rowcount
    cursor.execute(before, params)
    totals.add(cursor.fetchall())
    return written


def _store_changed_units(
    d: Dialect, s: sql.Stored, cursor: Any, params: dict, totals: "Sums"
) -> int:
    """Recompute the units with new exposures or reached pending timestamps, and what that
    changed to ``totals``; returns how many rows were written."""
    units = sql.changed_units()
    cursor.execute(sql.stored_sums_sql(s, units), params)
    totals.add(cursor.fetchall(), sign=-1)
    ctes, upsert = sql.store_units_sql(d, s, units, _lateral(d))
    if d.vendor == "postgresql":
        expressions = sql.sums(s.stored_pairs())
        cursor.execute(sql.sums_of_returned(ctes, upsert, sql.returned(s), expressions), params)
        return totals.add_written(cursor.fetchall())
    cursor.execute(f"WITH {ctes} {upsert} RETURNING {sql.returned(s)}", params)
    rows = cursor.fetchall()
    totals.add(Sums.of_rows(rows, s.binary))
    return len(rows)


class Sums:
    """Per (variant id, state): the number of exposed units' rows and, per slot, the sums
    ``analysis.sql.incremental.sums`` lists. Kept with the rows: each write adds what it
    changed, so a snapshot reads a few numbers instead of every row."""

    def __init__(self, by_group: dict[tuple[int, int], list[float]] | None = None) -> None:
        self.by_group = by_group or {}

    @classmethod
    def load(cls, text: str) -> "Sums":
        data = json.loads(text or "{}")
        return cls({tuple(map(int, k.split(":"))): v for k, v in data.items()})  # type: ignore[misc]

    def dump(self) -> str:
        return json.dumps({f"{v}:{st}": sums for (v, st), sums in self.by_group.items()})

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> "Sums":
        sums = cls()
        sums.add(rows)
        return sums

    @staticmethod
    def of_rows(rows: Sequence[Sequence[Any]], binary: Sequence[bool]) -> list[list[Any]]:
        """(variant, state, t0, v0, x0, v1, x1, ...) rows -> per (variant, state) the sums
        ``sql.stored_sums_sql`` gives (``binary``: slots read as 0 or 1)."""
        out: dict[tuple[int, int], list[float]] = {}
        for row in rows:
            if row[2] is None:
                continue
            sums = out.setdefault(
                (int(row[0]), int(row[1])), [0.0] * (1 + SUMS_PER_SLOT * len(binary))
            )
            sums[0] += 1
            for i, flag in enumerate(binary):
                v, x = float(row[3 + 2 * i]), float(row[4 + 2 * i])
                if flag:
                    v, x = float(v > 0), float(x > 0)
                for j, value in enumerate((v, v * v, x, x * x, v * x, v != 0, x != 0)):
                    sums[1 + SUMS_PER_SLOT * i + j] += value
        return [[v, st, *sums] for (v, st), sums in out.items()]

    def add(self, rows: Sequence[Sequence[Any]], sign: int = 1) -> None:
        """Add (variant, state, values...) rows, or take them away (``sign`` -1)."""
        for row in rows:
            key = (int(row[0]), int(row[1]))
            values = [float(x or 0) for x in row[2:]]
            current = self.by_group.setdefault(key, [0.0] * len(values))
            self.by_group[key] = [a + sign * b for a, b in zip(current, values, strict=True)]

    def add_written(self, rows: Sequence[Sequence[Any]]) -> int:
        """Add ``sums_of_returned`` rows; returns how many rows were written."""
        self.add([row[:-1] for row in rows])
        return sum(int(row[-1]) for row in rows)

    def units(self) -> int:
        return int(sum(sums[0] for sums in self.by_group.values()))

    def counts(self) -> aggregation.ExposureCounts:
        rows = [(v, st, round(sums[0])) for (v, st), sums in self.by_group.items()]
        return aggregation._counts([r for r in rows if r[2]])

    def clean_units(self) -> int:
        return sum(round(sums[0]) for (_, state), sums in self.by_group.items() if state == CLEAN)

    def stats(
        self, slot: int, metric: MetricSpec, taken: dict[int, list[float]] | None = None
    ) -> dict[int, SampleStats]:
        """The metric's per-variant statistics from its slot, as the full statement gives
        them (analysed units only; a sum whose rows are all 0 is exactly 0), less what
        winsorization takes off per variant (``taken``: v, v², x, x², v·x)."""
        out: dict[int, SampleStats] = {}
        for (variant, state), sums in sorted(self.by_group.items()):
            n = round(sums[0])
            if state != CLEAN or n <= 0:
                continue
            base = 1 + SUMS_PER_SLOT * slot
            sv, svv, sx, sxx, svx, nzv, nzx = sums[base : base + SUMS_PER_SLOT]
            if round(nzv) == 0:
                sv = svv = svx = 0.0
            if round(nzx) == 0:
                sx = sxx = svx = 0.0
            if taken and variant in taken:
                off = taken[variant]
                sv, svv, sx, sxx, svx = (
                    sv - off[0],
                    svv - off[1],
                    sx - off[2],
                    sxx - off[3],
                    svx - off[4],
                )
            if metric.kind == "ratio":
                extra = {"den_sum": sx, "den_sum_sq": sxx, "sum_prod": svx}
            elif metric.cuped:
                extra = {"cov_sum": sx, "cov_sum_sq": sxx, "cov_sum_prod": svx}
            else:
                extra = {}
            out[variant] = SampleStats(n=n, sum=sv, sum_sq=svv, **extra)
        return out


# --- rebuilding -------------------------------------------------------------------------------


def _rebuild(
    d: Dialect,
    plan: Plan,
    window: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Recompute every unit's row from the events up to a safe watermark, REBUILD_CHUNK units
    per transaction (SQLite's write lock, which ingestion waits for, is held one chunk at a
    time). Returns the number of units. A rebuild started meanwhile supersedes this one."""
    experiment_id = window["experiment_id"]
    with transaction.atomic():
        state = _locked_state(d, experiment_id) or AggregateState(experiment_id=experiment_id)
        mark, candidates = watermarks.advance(d.connection, Watermark(), [], REBUILD_WAIT_SECONDS)
        state.signature, state.metrics = plan.signature, plan.definitions
        state.since, state.through = window["since"], window["through"]
        state.exposure_watermark, state.event_watermark = mark.exposure, mark.event
        state.candidates, state.ready = candidates, False
        state.generation += 1
        state.save()
        generation = state.generation
        with d.connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {sql.TABLE} WHERE experiment_id = %s", [experiment_id])
    params = plan.params(d, window, e_hi=mark.event)
    chunks, units = _chunks(d, params)
    ctes, upsert = sql.store_units_sql(d, plan.stored, None, _lateral(d))
    statement = f"WITH {ctes} {upsert}"
    for done, (lo, hi) in enumerate(chunks, start=1):
        with transaction.atomic():
            _without_jit(d)
            _check_generation(d, experiment_id, generation)
            with d.connection.cursor() as cursor:
                cursor.execute(statement, {**params, "lo": lo, "hi": hi})
        if progress is not None:
            progress(min(done * REBUILD_CHUNK, units), units)
    with transaction.atomic():
        state = _check_generation(d, experiment_id, generation)
        with d.connection.cursor() as cursor:
            if d.vendor == "postgresql":
                # The planner's statistics of the new rows: the snapshot's read follows.
                cursor.execute(f"ANALYZE {sql.TABLE}")
            cursor.execute(sql.stored_sums_sql(plan.stored), params)
            state.sums, state.sums_age = Sums.from_rows(cursor.fetchall()).dump(), 0
        state.ready, state.rebuilt_at = True, timezone.now()
        state.save(update_fields=["sums", "sums_age", "ready", "rebuilt_at", "updated_at"])
    return units


def _chunks(d: Dialect, params: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """(lo, hi] ranges of unit ids, REBUILD_CHUNK units each, and the number of units."""
    with d.connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), MAX(unit_id) FROM ({sql.all_units()}) a", params)
        units, last = cursor.fetchone()
        cursor.execute(sql.chunk_bounds_sql(REBUILD_CHUNK), params)
        bounds = [row[0] for row in cursor.fetchall()]
    if not units:
        return [], 0
    if not bounds or bounds[-1] != last:
        bounds.append(last)
    return list(zip(["", *bounds[:-1]], bounds, strict=True)), int(units)


def _check_generation(d: Dialect, experiment_id: int, generation: int) -> AggregateState:
    state = _locked_state(d, experiment_id)
    if state is None or state.generation != generation:
        raise Superseded(f"another rebuild of experiment {experiment_id} started")
    return state


def rebuild(
    experiment: Experiment, progress: Callable[[int, int], None] | None = None
) -> int | None:
    """Recompute the experiment's stored rows from its events, at its live cut-off (now, or
    when it ended), as the next snapshot would (repairs: after events were deleted or
    restored). Returns how many units they hold; None when none of its metrics can be
    stored (nothing written). ``progress(units done, units)`` after each chunk."""
    from analysis.compute import _metric_spec  # compute imports this module

    since = experiment.phase_started_at or experiment.started_at or experiment.created_at
    now = timezone.now()
    ended = experiment.ended_at
    through = ended if ended is not None and ended < now else now
    metrics = [_metric_spec(em) for em in experiment.experiment_metrics.select_related("metric")]
    plan = plan_for(metrics, since)
    if plan is None:
        return None
    d = dialect_for(connections[DEFAULT_DB_ALIAS])
    return _rebuild(
        d, plan, _window(experiment.pk, experiment.project_id, since, through), progress
    )


def forget_deleted_events(*, project_id: int, **_: Any) -> None:
    """Events of the project were deleted (assignments.signals.events_deleted): the stored
    rows of its experiments may hold them, so the next snapshot of each rebuilds them."""
    AggregateState.objects.filter(experiment__project_id=project_id).update(ready=False)


# --- 2. the snapshot's read -------------------------------------------------------------------


def experiment_aggregates(
    *,
    experiment_id: int,
    project_id: int,
    metrics: Sequence[MetricSpec],
    since: datetime,
    through: datetime,
) -> ExperimentAggregates:
    """``aggregation.experiment_aggregates`` from the stored rows, after ``refresh`` returned
    True, in the caller's consistent read. Metrics without winsorization come from the sums
    kept with the rows, the winsorized ones from one pass over the rows (their caps depend on
    every unit), both corrected for the units with rows committed since the refresh (computed
    from their events here); metrics the rows do not hold come from the full statement. Falls
    back to the full statement for all when the rows are not those of this cut-off or a read
    fails on the data."""
    window = _window(experiment_id, project_id, since, through)
    plan = plan_for(metrics, since)
    alias = read_alias()
    state = AggregateState.objects.using(alias).filter(experiment_id=experiment_id).first()
    if plan is None or not _current(state, plan, through):
        logger.info("experiment %s: stored aggregates not usable; full statement", experiment_id)
        return aggregation.experiment_aggregates(metrics=metrics, **window)
    d = dialect_for(connections[alias])
    params = plan.params(d, window, x_hi=state.exposure_watermark, e_hi=state.event_watermark)
    try:
        with d.statement_scope():
            jit = _without_jit(d)
            previous = _previous_caps(alias, experiment_id, plan)
            counts, stored = _read(d, plan, Sums.load(state.sums), params, previous)
            _restore_jit(d, jit)
    except DatabaseError as exc:
        if not d.is_per_metric_failure(exc):
            raise
        logger.warning(
            "experiment %s: reading the stored aggregates failed (%s)", experiment_id, exc
        )
        return aggregation.experiment_aggregates(metrics=metrics, **window)
    if not all(aggregation._finite(a) for a in stored.values()):
        return aggregation.experiment_aggregates(metrics=metrics, **window)
    rest = [m for m in metrics if m.key not in stored]
    if not rest:
        return ExperimentAggregates(counts, stored)
    others = aggregation.experiment_aggregates(metrics=rest, **window)
    return ExperimentAggregates(counts, {**stored, **others.metrics}, dict(others.errors))


TOP_LIMIT = 50_000  # a cap needing more of the highest values is computed by one pass instead


def _read(
    d: Dialect,
    plan: Plan,
    totals: Sums,
    params: dict[str, Any],
    previous: dict[tuple[int, str], float],
) -> tuple[aggregation.ExposureCounts, dict[str, MetricAggregate]]:
    """The counts and every stored metric's statistics: the kept sums, corrected for the units
    with rows above the watermarks; a winsorized metric's caps from the highest values of its
    columns (the q-quantile needs only the values above it), and its capped sums as the kept
    ones less what capping takes off those values."""
    lateral = _lateral(d)
    s = plan.stored
    with d.connection.cursor() as cursor:
        cursor.execute(sql.hot_sums_sql(d, s, lateral), params)
        for row in cursor.fetchall():
            totals.add([row[1:]], sign=1 if row[0] else -1)
        codes = {name: i for i, name in enumerate(plan.names)}
        columns = {i: aggregation._columns(i, m, codes) for i, m in enumerate(plan.metrics)}
        clean = totals.clean_units()
        capped = {i: cols for i, cols in columns.items() if _capped(cols)}
        wanted, passes = [], []
        for i, cols in capped.items():
            needs = [(i, "v" if role == "value" else "x", c) for role, c in cols.items()]
            needs = [
                (slot, c, _top_count(clean, col)) for slot, c, col in needs if col.cap_quantile
            ]
            if all(k <= TOP_LIMIT for _, _, k in needs):
                wanted += needs
            else:
                passes.append(i)
        out: dict[str, MetricAggregate] = {}
        if wanted:
            tops = _tops(cursor, d, s, wanted, params, previous)
            for i in capped:
                if i not in passes:
                    mine = {(c, n) for n, (slot, c, _) in enumerate(wanted) if slot == i}
                    out[plan.metrics[i].key] = _capped_aggregate(
                        i, plan.metrics[i], columns[i], totals, clean, tops, mine
                    )
        if passes:
            chosen = [columns[i] for i in passes]
            cursor.execute(sql.read_sql(d, s, passes, chosen, lateral), params)
            _, aggregates = aggregation._read_rows(
                cursor.fetchall(), [plan.metrics[i] for i in passes], chosen
            )
            out.update(aggregates)
    for i, metric in enumerate(plan.metrics):
        if i not in capped:
            out[metric.key] = MetricAggregate(totals.stats(i, metric))
    return totals.counts(), out


GUARD = 0.75  # of the previous cap: the values fetched in one scan when it still holds
ABOVE_LIMIT = 4 * TOP_LIMIT


def _tops(
    cursor: Any,
    d: Dialect,
    s: sql.Stored,
    wanted: Sequence[tuple[int, str, int]],
    params: dict[str, Any],
    previous: dict[tuple[int, str], float],
) -> dict[int, list[tuple]]:
    """Per index of ``wanted`` (slot, "v" or "x", k): its k highest rows (unit_id, variant_id,
    the slot's v and x). One scan fetches every value above GUARD times the previous snapshot's
    caps; a column for which that is fewer than k values (its cap fell, or it has none yet) is
    read by its own ordered scan."""
    lateral = _lateral(d)
    tops: dict[int, list[tuple]] = {}
    missing = list(range(len(wanted)))
    guards = [(slot, c, previous.get((slot, c), 0.0) * GUARD) for slot, c, _ in wanted]
    if all(g > 0 for _, _, g in guards):
        cursor.execute(sql.above_sql(d, s, guards, ABOVE_LIMIT, lateral), params)
        rows = cursor.fetchall()
        slots = sorted({slot for slot, _, _ in wanted})
        if len(rows) < ABOVE_LIMIT:
            missing = []
            for n, ((slot, c, k), (_, _, g)) in enumerate(zip(wanted, guards, strict=True)):
                at = 2 + 2 * slots.index(slot)
                key = at if c == "v" else at + 1
                above = sorted((r for r in rows if r[key] >= g), key=lambda r: r[key])[::-1]
                if len(above) >= k:
                    tops[n] = [(r[0], int(r[1]), r[at], r[at + 1]) for r in above[:k]]
                else:
                    missing.append(n)
    if missing:
        cursor.execute(sql.top_sql(d, s, [wanted[n] for n in missing], lateral), params)
        for q, unit_id, variant_id, *values in cursor.fetchall():
            tops.setdefault(missing[int(q)], []).append((unit_id, int(variant_id), *values))
    return tops


def _previous_caps(alias: str, experiment_id: int, plan: Plan) -> dict[tuple[int, str], float]:
    """The caps the experiment's latest snapshot used, by (slot, "v" or "x"): a guess of this
    snapshot's, to fetch the values above them in one scan."""
    latest = (
        ResultSnapshot.objects.using(alias)
        .filter(experiment_id=experiment_id)
        .order_by("-data_through", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    slots = {m.key: i for i, m in enumerate(plan.metrics)}
    rows = ResultRow.objects.using(alias).filter(
        snapshot_id=latest, is_control=True, metric_key__in=list(slots)
    )
    out = {}
    for key, details in rows.values_list("metric_key", "details"):
        for role, cap in ((details or {}).get("winsor_caps") or {}).items():
            if isinstance(cap, int | float):
                out[(slots[key], "v" if role == "value" else "x")] = float(cap)
    return out


def _top_count(units: int, column: Any) -> int:
    """How many of the highest values the column's q-quantile over ``units`` values needs
    (order statistics from position floor((units - 1) q) up)."""
    if units == 0:
        return 0
    return units - math.floor((units - 1) * float(column.cap_quantile))


def winsor_cap(descending: Sequence[float], units: int, q: float) -> float | None:
    """The q-quantile of ``units`` values from their highest (``_top_count`` of them, in
    descending order), interpolated as PostgreSQL's percentile_cont (Hyndman-Fan 7):
    lo + (h - floor h) (hi - lo) at h = q (units - 1)."""
    if units == 0:
        return None
    h = q * (units - 1)
    k = len(descending)  # = units - floor(h)
    lo = descending[k - 1]
    if math.ceil(h) == math.floor(h):
        return lo
    hi = descending[k - 2]
    return lo + (h - math.floor(h)) * (hi - lo)


def _capped_aggregate(
    slot: int,
    metric: MetricSpec,
    columns: dict,
    totals: Sums,
    clean: int,
    tops: dict[int, list[tuple]],
    mine: set[tuple[str, int]],
) -> MetricAggregate:
    """A winsorized metric: caps from the highest values, per-variant sums capped."""
    roles = {("v" if role == "value" else "x"): role for role in columns}
    caps: dict[str, float] = {}
    for c, n in mine:
        values = [row[2] if c == "v" else row[3] for row in tops.get(n, [])]
        cap = winsor_cap(values, clean, float(columns[roles[c]].cap_quantile))
        if cap is not None:
            caps[roles[c]] = cap
    cv, cx = caps.get(roles["v"]), caps.get(roles.get("x", ""))
    units = {row[0]: row[1:] for n in (n for _, n in mine) for row in tops.get(n, [])}
    taken: dict[int, list[float]] = {}
    for variant, v, x in units.values():
        v, x = float(v), float(x)
        kept_v = min(v, cv) if cv is not None else v
        kept_x = min(x, cx) if cx is not None else x
        off = taken.setdefault(variant, [0.0] * 5)
        for j, value in enumerate(
            (
                v - kept_v,
                v * v - kept_v * kept_v,
                x - kept_x,
                x * x - kept_x * kept_x,
                v * x - kept_v * kept_x,
            )
        ):
            off[j] += value
    return MetricAggregate(totals.stats(slot, metric, taken), caps)


def _capped(columns: dict) -> bool:
    return any(c.cap_quantile is not None for c in columns.values())


def _current(state: AggregateState | None, plan: Plan, through: datetime) -> bool:
    return (
        state is not None
        and state.ready
        and state.signature == plan.signature
        and state.through == through
    )
