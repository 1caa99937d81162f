"""The incremental analysis (analysis/incremental.py) against the full statement, on SQLite and
PostgreSQL: random histories of late, out-of-order and duplicate events, units exposed to two
variants or against their assignment, events before t0 (CUPED), windows cut off by the cut-off,
winsorized and ratio metrics; each snapshot from the stored rows must equal the full
statement's for the same cut-off."""

import random
from dataclasses import replace
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from analysis import aggregation, incremental, incremental_plan, incremental_read, incremental_tops
from analysis.aggregation import MetricSpec
from analysis.compute import _metric_spec
from analysis.models import AggregateState, UnitAggregate, UnitAggregateMark, UnitAggregateTop
from analysis.sql import incremental_read as read_statements
from analysis.sql.builders import CLEAN
from analysis.unit_aggregates import SLOTS
from assignments.models import Exposure, MetricEvent
from experiments.models import Experiment
from tests.analysis.test_aggregation import T0, event, expose, h
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

METRICS = [
    MetricSpec(key="purchase", kind="binomial", event_name="purchase", window_hours=48),
    MetricSpec(key="clicks", kind="count", event_name="click", window_hours=24, cuped=False),
    MetricSpec(
        key="revenue",
        kind="mean",
        event_name="purchase",
        window_hours=72,
        winsorize_quantile=0.8,
    ),
    MetricSpec(
        key="ctr",
        kind="ratio",
        event_name="click",
        denominator_event="view",
        window_hours=48,
        winsorize_quantile=0.9,
    ),
    MetricSpec(key="views", kind="count", event_name="view", window_hours=6),
]
NAMES = ["purchase", "click", "view", "signup"]


@pytest.fixture
def experiment(project, metrics):
    """Running, its phase started at T0 (the metrics below are given to each call)."""
    experiment = running_experiment(project)
    Experiment.objects.filter(pk=experiment.pk).update(phase_started_at=T0, started_at=T0)
    return Experiment.objects.get(pk=experiment.pk)


class History:
    """Random exposures and events of one experiment, stored batch by batch as ingestion
    stores them (duplicates of an event id are dropped by the unique key)."""

    def __init__(self, experiment, seed: int, units: int = 24):
        self.experiment = experiment
        self.rng = random.Random(seed)
        self.variants = list(experiment.variants.order_by("position").values_list("pk", flat=True))
        self.units = [f"u{i}" for i in range(units)]
        self.assigned = {u: self.rng.choice(self.variants) for u in self.units}
        self.ids: list[str] = []
        self.count = 0

    def _id(self, prefix: str) -> str:
        if self.ids and self.rng.random() < 0.08:
            return self.rng.choice(self.ids)  # a duplicate: resent by a retrying client
        self.count += 1
        self.ids.append(f"{prefix}{self.count}")
        return self.ids[-1]

    def batch(self, now: float, exposures: int = 6, events: int = 30) -> None:
        """Exposures and events stamped mostly before ``now`` (hours), in random order, some
        late (long before), some after it (clock skew, or past the cut-off)."""
        rng, project = self.rng, self.experiment.project
        rows = []
        for _ in range(exposures):
            unit = rng.choice(self.units)
            variant = self.assigned[unit]
            if rng.random() < 0.1:
                variant = rng.choice(self.variants)  # seen the other variant too
            rows.append(
                Exposure(
                    project=project,
                    event_id=self._id("x"),
                    experiment=self.experiment,
                    variant_id=variant,
                    unit_id=unit,
                    ts=h(self._when(now, before_start=0.1)),
                    assignment_mismatch=rng.random() < 0.04,
                )
            )
        Exposure.objects.bulk_create(rows, ignore_conflicts=True)
        rows = []
        for _ in range(events):
            rows.append(
                MetricEvent(
                    project=project,
                    event_id=self._id("e"),
                    name=rng.choice(NAMES),
                    unit_id=rng.choice([*self.units, "stranger"]),
                    value=rng.choice(
                        [1.0, 1.0, 2.5, rng.uniform(-5, 400), -rng.uniform(50, 400)]
                    ),  # refunds: a unit's sum falls
                    ts=h(self._when(now, before_start=0.15)),
                )
            )
        MetricEvent.objects.bulk_create(rows, ignore_conflicts=True)

    def _when(self, now: float, before_start: float) -> float:
        rng = self.rng
        r = rng.random()
        if r < before_start:
            return rng.uniform(-80, 0)  # before the phase (CUPED covariates, ignored exposures)
        if r < 0.8:
            return rng.uniform(max(0.0, now - 30), now)  # recent
        if r < 0.93:
            return rng.uniform(0, now)  # late: long before the last cut-off
        return rng.uniform(now, now + 30)  # ahead of the cut-off


def window(experiment, through, metrics=METRICS):
    return {
        "experiment_id": experiment.pk,
        "project_id": experiment.project_id,
        "metrics": list(metrics),
        "since": T0,
        "through": through,
    }


def assert_same(stored, full):
    """Counts and caps equal; sums equal up to the order of float additions."""
    assert stored.counts == full.counts
    assert stored.errors == full.errors
    assert set(stored.metrics) == set(full.metrics)
    for key, expected in full.metrics.items():
        got = stored.metrics[key]
        assert got.caps == pytest.approx(expected.caps, rel=1e-12), key
        assert set(got.stats) == set(expected.stats), key
        for variant, stats in expected.stats.items():
            assert got.stats[variant].n == stats.n, key
            for name in ("sum", "sum_sq", "den_sum", "den_sum_sq", "sum_prod", "cov_sum"):
                a, b = getattr(got.stats[variant], name), getattr(stats, name)
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (key, name)
            for name in ("cov_sum_sq", "cov_sum_prod"):
                a, b = getattr(got.stats[variant], name), getattr(stats, name)
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (key, name)


def snapshot(experiment, through, metrics=METRICS):
    """The stored path's aggregates (after bringing the rows up to date) and the full
    statement's, for the same cut-off."""
    w = window(experiment, through, metrics)
    stored = incremental.refresh(**w)
    read = incremental_read.experiment_aggregates if stored else aggregation.experiment_aggregates
    return stored, read(**w), aggregation.experiment_aggregates(**w)


@pytest.fixture(params=["hash_join", "index_lookup"])
def strategy(request, monkeypatch):
    """The per-unit recomputations read events by a join or by index lookups (PostgreSQL)."""
    if request.param == aggregation.INDEX_LOOKUP and connection.vendor != "postgresql":
        pytest.skip("index lookups are a PostgreSQL plan")
    monkeypatch.setattr(aggregation, "read_strategy", lambda: request.param)
    return request.param


@pytest.fixture(params=["no caps", "last caps", "caps too high"])
def previous_caps(request, monkeypatch):
    """The winsorized metrics' values above the previous snapshot's caps are fetched in one
    scan, if there are enough of them: no previous snapshot, its caps, or caps above every
    value (each column read by its own scan then). On PostgreSQL the refresh keeps the top
    units of each column from the same caps (thresholds), which the read then uses."""
    caps: dict = {}

    def previous(alias, experiment_id, plan):
        slots = {m.key: i for i, m in enumerate(plan.metrics)}
        scale = 10.0 if request.param == "caps too high" else 1.0
        return {
            (slots[key], "v" if role == "value" else "x"): cap * scale
            for key, metric_caps in caps.items()
            for role, cap in metric_caps.items()
        }

    if request.param != "no caps":
        monkeypatch.setattr(incremental_tops, "previous_caps", previous)
    return SimpleNamespace(caps=caps, mode=request.param)


@pytest.mark.parametrize("seed", range(3))
def test_snapshots_from_the_stored_rows_equal_the_full_statement(
    experiment, strategy, previous_caps, seed, monkeypatch
):
    """Snapshots every few hours of a random history: each from the stored rows equals the
    full statement's for the same cut-off, whatever arrived late, out of order, twice or after
    the cut-off, and whatever was committed between bringing the rows up to date and reading
    them (read from the events then); a backfill's past cut-off is left to the full
    statement."""
    history = History(experiment, seed)
    from_top_units = []
    for name, top in (("above_sql", False), ("above_top_sql", True)):
        original = getattr(read_statements, name)
        monkeypatch.setattr(
            read_statements,
            name,
            lambda *args, top=top, original=original: from_top_units.append(top) or original(*args),
        )
    now = 2.0
    for step in range(10):
        history.batch(now)
        w = window(experiment, h(now))
        stored = incremental.refresh(**w)
        assert stored, f"step {step}: the stored rows were not used"
        assert_top_units_exact(experiment)
        if step % 3 == 2:
            history.batch(now, exposures=2, events=8)  # committed after the refresh
        full = aggregation.experiment_aggregates(**w)
        assert_same(incremental_read.experiment_aggregates(**w), full)
        previous_caps.caps.update({key: agg.caps for key, agg in full.metrics.items()})
        if step == 6:
            past = window(experiment, h(now / 2))
            assert not incremental.refresh(**past), "a past cut-off uses the full statement"
        last = now
        now += history.rng.choice([0.0, 0.5, 3.0, 11.0, 30.0])
    assert AggregateState.objects.get(experiment=experiment).through == h(last)
    assert UnitAggregate.objects.filter(experiment=experiment).exists()
    if connection.vendor == "postgresql" and previous_caps.mode == "last caps":
        assert AggregateState.objects.get(experiment=experiment).thresholds
        assert UnitAggregateTop.objects.filter(experiment=experiment).exists()
        assert any(from_top_units), "the read never took the values from the top units"


def assert_top_units_exact(experiment):
    """UnitAggregateTop holds, per column with a threshold, exactly the analysed units whose
    stored value is at or above it, with their row's variant and slot's values (what the read
    relies on)."""
    state = AggregateState.objects.get(experiment=experiment)
    for code, threshold in incremental_tops.thresholds_of(state).items():
        slot, x = divmod(code, 2)
        column = f"{'vx'[x]}{slot}"
        expected = {
            unit: (variant, v, x)
            for unit, variant, v, x in UnitAggregate.objects.filter(
                experiment=experiment,
                t0__isnull=False,
                state=CLEAN,
                **{f"{column}__gte": threshold},
            ).values_list("unit_id", "variant_id", f"v{slot}", f"x{slot}")
        }
        kept = {
            unit: (variant, v, x)
            for unit, variant, v, x in UnitAggregateTop.objects.filter(
                experiment=experiment, code=code
            ).values_list("unit_id", "variant_id", "v", "x")
        }
        assert kept == expected, (code, threshold)


def test_a_unit_exposed_again_earlier_or_to_the_other_variant_is_recomputed(experiment):
    """Late exposures change a unit's t0 (its windows move) or its state (two variants): its
    stored row is recomputed, not added to."""
    control, treatment = experiment.variants.order_by("position")
    p = experiment.project
    expose(experiment, control, "a", h(10))
    expose(experiment, control, "b", h(10))
    for unit, at in [("a", 5), ("a", 11), ("b", 12)]:
        event(p, unit, "purchase", h(at), 10)
    assert_same(*snapshot(experiment, h(20))[1:])
    # a: first exposed at +4h after all (its +5h purchase now counts); b: seen the treatment.
    expose(experiment, control, "a", h(4))
    expose(experiment, treatment, "b", h(15))
    stored, got, full = snapshot(experiment, h(21))
    assert stored
    assert_same(got, full)
    assert full.counts.multi_variant_units == 1
    assert full.metrics["revenue"].stats[control.pk].sum == 20


def test_a_cut_off_reaching_a_stored_future_event_recomputes_its_unit(experiment):
    """An exposure or event stamped after the cut-off (clock skew) is read once, when it
    arrives; its unit's ``pending`` makes the snapshot whose cut-off passes it recompute the
    unit."""
    control, treatment = experiment.variants.order_by("position")
    p = experiment.project
    expose(experiment, control, "a", h(1))
    expose(experiment, treatment, "a", h(30))
    expose(experiment, treatment, "c", h(25))
    event(p, "c", "purchase", h(26), 3)
    stored, got, full = snapshot(experiment, h(20))
    assert stored and full.counts.units == 1 and full.counts.multi_variant_units == 0
    assert_same(got, full)
    row = UnitAggregate.objects.get(experiment=experiment, unit_id="a")
    assert row.pending == h(30)
    stored, got, full = snapshot(experiment, h(40))
    assert stored and full.counts.multi_variant_units == 1 and full.counts.units == 1
    assert full.metrics["purchase"].stats[treatment.pk].sum == 1
    assert_same(got, full)


def test_metrics_the_rows_cannot_hold_come_from_the_full_statement(experiment):
    """Beyond SLOTS metrics, the rest are computed by the full statement in the same read; the
    result is still the full statement's."""
    history = History(experiment, seed=11)
    history.batch(10)
    many = [replace(METRICS[i % len(METRICS)], key=f"m{i}") for i in range(SLOTS + 2)]
    stored, got, full = snapshot(experiment, h(10), many)
    assert stored
    assert_same(got, full)
    state = AggregateState.objects.get(experiment=experiment)
    assert [m["key"] for m in state.metrics] == [m.key for m in many[:SLOTS]]


def test_a_changed_metric_or_phase_rebuilds_the_rows(experiment):
    """The rows are for the phase and the metric definitions they were computed for: another
    window, event or phase start rebuilds them."""
    history = History(experiment, seed=5)
    history.batch(20)
    snapshot(experiment, h(20))
    generation = AggregateState.objects.get(experiment=experiment).generation
    changed = [replace(METRICS[0], window_hours=12), *METRICS[1:]]
    stored, got, full = snapshot(experiment, h(21), changed)
    assert stored
    assert_same(got, full)
    state = AggregateState.objects.get(experiment=experiment)
    assert state.generation == generation + 1
    w = {**window(experiment, h(22), changed), "since": h(3)}
    assert incremental.refresh(**w)
    assert_same(incremental_read.experiment_aggregates(**w), aggregation.experiment_aggregates(**w))
    assert AggregateState.objects.get(experiment=experiment).generation == generation + 2


def test_rows_lost_in_a_crash_are_rebuilt(experiment):
    """PostgreSQL empties the unlogged rows and their marks after a crash (and a promoted
    replica never had them) while the state, logged, still says they are ready: the next
    refresh finds no mark of the state's rebuild and rebuilds instead of adding new events to
    rows that are gone. A mark of another rebuild does not count either."""
    history = History(experiment, seed=8)
    history.batch(10)
    assert_same(*snapshot(experiment, h(10))[1:])
    generation = AggregateState.objects.get(experiment=experiment).generation
    assert UnitAggregateMark.objects.get(experiment=experiment).generation == generation
    # The crash: both unlogged tables emptied.
    UnitAggregate.objects.filter(experiment=experiment).delete()
    UnitAggregateMark.objects.filter(experiment=experiment).delete()
    history.batch(14)
    stored, got, full = snapshot(experiment, h(14))
    assert stored
    assert_same(got, full)
    assert AggregateState.objects.get(experiment=experiment).generation == generation + 1
    assert UnitAggregate.objects.filter(experiment=experiment).exists()
    UnitAggregateMark.objects.filter(experiment=experiment).update(generation=generation)
    history.batch(18)
    stored, got, full = snapshot(experiment, h(18))
    assert stored
    assert_same(got, full)
    assert AggregateState.objects.get(experiment=experiment).generation == generation + 2


def test_the_rows_are_read_on_the_primary_when_the_analysis_reads_a_replica(
    experiment, monkeypatch
):
    """A replica does not hold the unlogged rows: inside the analysis' replica block, their
    read goes to the primary (the tests have no ``replica`` database, so any read there would
    fail)."""
    from core import replica

    History(experiment, seed=4).batch(10)
    w = window(experiment, h(10))
    assert incremental.refresh(**w)
    full = aggregation.experiment_aggregates(**w)
    monkeypatch.setattr(replica, "_usable_alias", lambda: replica.REPLICA)
    with replica.analysis_reads() as alias:
        assert alias == replica.REPLICA
        got = incremental_read.experiment_aggregates(**w)
        assert replica.read_alias() == replica.REPLICA
    assert_same(got, full)


def test_the_rows_are_kept_out_of_the_write_ahead_log(db):
    """PostgreSQL: the stored rows and their marks are UNLOGGED tables (derived data, rebuilt
    when lost); the state, which says what they hold, is logged. The rows' unit ids are in
    collation "C" (cheaper lookups)."""
    if connection.vendor != "postgresql":
        pytest.skip("an unlogged table is a PostgreSQL feature")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relpersistence FROM pg_class WHERE relname IN "
            "('analysis_unitaggregate', 'analysis_unitaggregatemark', 'analysis_aggregatestate')"
        )
        persistence = dict(cursor.fetchall())
    assert persistence == {
        "analysis_unitaggregate": "u",
        "analysis_unitaggregatemark": "u",
        "analysis_aggregatestate": "p",
    }
    with connection.cursor() as cursor:  # and their unit ids compare by bytes
        cursor.execute(
            "SELECT table_name, collation_name FROM information_schema.columns"
            " WHERE column_name = 'unit_id' AND table_name LIKE 'analysis_unitaggregate%%'"
        )
        assert dict(cursor.fetchall()) == {
            "analysis_unitaggregate": "C",
            "analysis_unitaggregatetop": "C",
        }


def test_with_the_setting_off_every_snapshot_is_the_full_statement(experiment, settings):
    settings.ABACUS_INCREMENTAL_AGGREGATES = False
    History(experiment, seed=3).batch(10)
    assert not incremental.refresh(**window(experiment, h(10)))
    assert not AggregateState.objects.exists()


def test_live_runs_read_the_stored_rows_and_backfills_do_not(experiment, settings):
    """``analysis_run``: a live run brings the stored rows up to date and stores the same
    snapshot rows as the full statement; a backfill (a past cut-off) leaves them alone."""
    from analysis.services import analysis_run

    History(experiment, seed=8).batch(40, exposures=20, events=80)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=h(0))
    live = analysis_run(experiment_id=experiment.pk, through=None)
    state = AggregateState.objects.get(experiment=experiment)
    assert state.through == live.data_through
    settings.ABACUS_INCREMENTAL_AGGREGATES = False
    full = analysis_run(experiment_id=experiment.pk)
    for a, b in zip(live.rows.order_by("id"), full.rows.order_by("id"), strict=True):
        assert (a.metric_key, a.variant, a.n) == (b.metric_key, b.variant, b.n)
        assert a.sum == pytest.approx(b.sum, rel=1e-12)
    settings.ABACUS_INCREMENTAL_AGGREGATES = True
    analysis_run(experiment_id=experiment.pk, through=h(20))
    assert AggregateState.objects.get(experiment=experiment).through == state.through


def test_the_pre_start_count_is_kept_with_the_rows(experiment):
    """The run's check of exposures stamped before the phase start: from the stored rows, the
    count kept up to their watermark plus those committed since, equal to a count of every
    exposure; a rebuild counts anew."""
    control, treatment = experiment.variants.order_by("position")

    def counted(through):
        w = window(experiment, through)
        assert incremental.refresh(**w)
        return incremental_read.pre_start_exposures(
            experiment_id=experiment.pk, project_id=experiment.project_id, since=w["since"]
        )

    def every():
        return Exposure.objects.filter(experiment=experiment, ts__lt=T0).count()

    expose(experiment, control, "a", h(-3))
    expose(experiment, control, "a", h(2))
    expose(experiment, treatment, "b", h(1))
    assert counted(h(5)) == every() == 1
    expose(experiment, treatment, "c", h(-1))  # after the refresh: above the watermark
    w = window(experiment, h(5))
    assert (
        incremental_read.pre_start_exposures(
            experiment_id=experiment.pk, project_id=experiment.project_id, since=w["since"]
        )
        == every()
        == 2
    )
    expose(experiment, treatment, "d", h(-2))
    expose(experiment, treatment, "d", h(6))
    assert counted(h(8)) == every() == 3
    assert AggregateState.objects.get(experiment=experiment).pre_start == 3
    UnitAggregateMark.objects.filter(experiment=experiment).delete()  # a rebuild next
    assert counted(h(9)) == every() == 3
    AggregateState.objects.filter(experiment=experiment).update(ready=False)
    assert (
        incremental_read.pre_start_exposures(
            experiment_id=experiment.pk, project_id=experiment.project_id, since=w["since"]
        )
        is None
    )


def test_the_rebuild_command_repairs_the_rows_after_events_are_deleted(experiment):
    """Deleting events (a repair, docs/operations.md) leaves the stored rows stale until
    ``manage.py rebuild_aggregates`` recomputes them, with progress on stdout."""
    History(experiment, seed=2).batch(30, exposures=20, events=60)
    through = h(30)
    specs = [_metric_spec(em) for em in experiment.experiment_metrics.select_related("metric")]
    w = window(experiment, through, specs)
    assert incremental.refresh(**w)
    MetricEvent.objects.filter(project=experiment.project, name="purchase").delete()
    stale = incremental_read.experiment_aggregates(**w)
    assert (
        stale.metrics["purchase"].stats
        != aggregation.experiment_aggregates(**w).metrics["purchase"].stats
    )
    out = StringIO()
    call_command("rebuild_aggregates", experiment=experiment.pk, stdout=out)
    assert "units" in out.getvalue() and "rebuilt" in out.getvalue()
    w = window(experiment, AggregateState.objects.get(experiment=experiment).through, specs)
    assert incremental.refresh(**w)
    assert_same(incremental_read.experiment_aggregates(**w), aggregation.experiment_aggregates(**w))


def test_the_rebuild_command_names_an_unknown_experiment(db):
    with pytest.raises(CommandError, match="no experiment with id 999999"):
        call_command("rebuild_aggregates", experiment=999999)


def test_deleting_events_rebuilds_the_rows_at_the_next_snapshot(experiment, admin_user):
    """An admin's deletion of events (docs/operations.md, "Removing bad events") marks the
    project's stored rows stale: the next snapshot rebuilds them without those events."""
    from assignments.services import events_delete

    History(experiment, seed=9).batch(30, exposures=20, events=60)
    assert_same(*snapshot(experiment, h(30))[1:])
    events_delete(project=experiment.project, actor=admin_user, names=["purchase"], kind="metric")
    assert not AggregateState.objects.get(experiment=experiment).ready
    stored, got, full = snapshot(experiment, h(31))
    assert stored
    assert_same(got, full)
    assert full.metrics["purchase"].stats == {} or all(
        s.sum == 0 for s in full.metrics["purchase"].stats.values()
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL settings")
def test_the_statements_run_with_the_analysis_work_mem_and_without_jit(settings):
    """The refresh's sorts and returned rows get the analysis' memory (not the server's 4 MB
    default, which spills them to disk), JIT is off, and both are put back afterwards."""
    from django.db import transaction

    from analysis.sql.dialects import dialect_for

    settings.ABACUS_ANALYSIS_WORK_MEM = "96MB"
    d = dialect_for(connection)

    def current() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('jit'), current_setting('work_mem')")
            return cursor.fetchone()

    with transaction.atomic():
        before = current()
        previous = incremental_plan.tune_statements(d)
        assert current() == ("off", "96MB")
        incremental_plan.restore_tuning(d, previous)
        assert current() == before
