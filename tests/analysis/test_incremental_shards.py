"""A refresh's new events added in shards on connections of their own (PostgreSQL;
analysis/incremental_shards.py): the snapshots equal the full statement's, and a refresh that
fails halfway neither loses an event nor adds one twice."""

import logging
from types import SimpleNamespace

import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, transaction

from analysis import aggregation, incremental, incremental_read, incremental_shards
from analysis.models import AggregateState, UnitAggregateProgress
from analysis.sql import incremental as statements
from analysis.sql.dialects import dialect_for
from tests.analysis.test_incremental import (
    History,
    assert_same,
    assert_top_units_exact,
    h,
    previous_caps,  # noqa: F401 (a fixture)
    snapshot,
    window,
)
from tests.analysis.test_incremental import experiment as experiment  # noqa: PLC0414 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="shards are a PostgreSQL path"),
]


@pytest.fixture
def sharded(settings, monkeypatch):
    """Three connections, whatever the number of new events; counts the shards' transactions."""
    settings.ABACUS_INCREMENTAL_CONNECTIONS = 3
    settings.ABACUS_AGGREGATES_WAIT_SECONDS = 0.05
    settings.ABACUS_INCREMENTAL_PARALLEL_FROM = 1
    calls: list[int] = []
    original = incremental_shards._own_transaction

    def counted(add, shard, *args):
        calls.append(shard)
        return original(add, shard, *args)

    monkeypatch.setattr(incremental_shards, "_own_transaction", counted)
    return calls


def backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.parametrize("seed", range(2))
def test_snapshots_added_in_shards_equal_the_full_statement(
    experiment,
    sharded,
    previous_caps,  # noqa: F811
    seed,
):
    """Random histories (late, duplicate and refunded events, units of two variants) whose
    rounds are added by three connections at once: every snapshot equals the full statement's,
    the top units stay exact, every shard records the state's watermark, and the shards'
    connections are closed afterwards."""
    history = History(experiment, seed, units=40)
    now, before = 2.0, backends()
    for step in range(8):
        history.batch(now, events=60)
        w = window(experiment, h(now))
        assert incremental.refresh(**w), f"step {step}"
        assert_top_units_exact(experiment)
        full = aggregation.experiment_aggregates(**w)
        assert_same(incremental_read.experiment_aggregates(**w), full)
        previous_caps.caps.update({key: agg.caps for key, agg in full.metrics.items()})
        now += history.rng.choice([0.5, 3.0, 11.0])
    assert sharded, "no round was added in shards"
    state = AggregateState.objects.get(experiment=experiment)
    progress = dict(
        UnitAggregateProgress.objects.filter(experiment=experiment).values_list(
            "shard", "event_watermark"
        )
    )
    assert set(progress) == {1, 2}
    assert max(progress.values()) <= state.event_watermark
    assert backends() == before


def test_every_unit_is_in_exactly_one_shard(db):
    d = dialect_for(connection)
    units = [f"user-{i}" for i in range(3000)] + ["", "é", "x" * 200]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT u, {statements.shard_of('u')} FROM unnest(%(units)s::text[]) u",
            {"units": units, "shards": 3},
        )
        shard = dict(cursor.fetchall())
    assert d.vendor == "postgresql"
    assert set(shard) == set(units)
    counts = [list(shard.values()).count(k) for k in range(3)]
    assert set(shard.values()) == {0, 1, 2}
    assert min(counts) > 800, counts  # balanced: about 1,000 each


def test_a_refresh_that_fails_after_a_shard_committed_rebuilds_the_rows(
    experiment, sharded, monkeypatch, caplog
):
    """The refresh fails after its shards have committed (here: recomputing the changed units
    raises): the shards' events are in the rows but the state does not count them. The next
    refresh sees a shard's progress above the state's watermark and rebuilds the rows, so no
    event is added twice."""
    history = History(experiment, seed=11, units=40)
    history.batch(4, events=80)
    assert_same(*snapshot(experiment, h(4))[1:])
    state = AggregateState.objects.get(experiment=experiment)
    history.batch(8, events=80)

    def lost(*args, **kwargs):
        raise RuntimeError("the worker was lost")

    monkeypatch.setattr(incremental, "_store_changed_units", lost)
    with pytest.raises(RuntimeError):
        incremental.refresh(**window(experiment, h(8)))
    monkeypatch.undo()
    assert sharded, "the failed refresh added no shard"
    after = AggregateState.objects.get(experiment=experiment)
    assert after.event_watermark == state.event_watermark, "the state was rolled back"
    assert incremental_shards.interrupted(experiment.pk, after.event_watermark)
    with caplog.at_level(logging.WARNING, logger="analysis.incremental"):
        stored, got, full = snapshot(experiment, h(8))
    assert stored
    assert_same(got, full)
    assert "failed after one of its shards had committed" in caplog.text
    rebuilt = AggregateState.objects.get(experiment=experiment)
    assert rebuilt.generation == state.generation + 1
    assert not incremental_shards.interrupted(experiment.pk, rebuilt.event_watermark)


def test_a_shard_that_fails_rolls_the_refresh_back(experiment, sharded, monkeypatch):
    """A shard's statement fails after its update (a database error in its own transaction):
    that shard rolls back, the refresh fails and rolls back its own shard with it, and the
    next refresh adds the round once, without a rebuild."""
    history = History(experiment, seed=12, units=40)
    history.batch(4, events=80)
    assert_same(*snapshot(experiment, h(4))[1:])
    state = AggregateState.objects.get(experiment=experiment)
    history.batch(8, events=80)
    original = incremental_shards.in_shards

    def failing(add, shards, cursor, **kwargs):
        def add_then_fail(shard_cursor, shard):
            rows = add(shard_cursor, shard)
            if shard == shards - 1:
                shard_cursor.execute("SELECT 1 / 0")  # a division by zero: DataError
            return rows

        return original(add_then_fail, shards, cursor, **kwargs)

    monkeypatch.setattr(incremental_shards, "in_shards", failing)
    assert not incremental.refresh(**window(experiment, h(8))), "the full statement instead"
    monkeypatch.undo()
    after = AggregateState.objects.get(experiment=experiment)
    assert after.event_watermark == state.event_watermark
    assert not incremental_shards.interrupted(experiment.pk, after.event_watermark)
    stored, got, full = snapshot(experiment, h(8))
    assert stored
    assert_same(got, full)
    assert AggregateState.objects.get(experiment=experiment).generation == state.generation


def test_shards_only_for_large_rounds_outside_a_transaction(settings):
    settings.ABACUS_INCREMENTAL_CONNECTIONS = 4
    d = dialect_for(connection)
    many = settings.ABACUS_INCREMENTAL_PARALLEL_FROM
    assert many == 10_000
    assert incremental_shards.shards_for(d, outermost=True, new_ids=many) == 4
    assert incremental_shards.shards_for(d, outermost=True, new_ids=many - 1) == 1
    assert incremental_shards.shards_for(d, outermost=False, new_ids=many) == 1
    settings.ABACUS_INCREMENTAL_CONNECTIONS = 1
    assert incremental_shards.shards_for(d, outermost=True, new_ids=many) == 1


def test_a_refresh_inside_a_transaction_adds_on_its_own_connection(experiment, sharded):
    """The shards' connections could not see the caller's uncommitted rows."""
    history = History(experiment, seed=13, units=40)
    with transaction.atomic():
        history.batch(4, events=80)
        assert_same(*snapshot(experiment, h(4))[1:])
        history.batch(8, events=80)
        stored, got, full = snapshot(experiment, h(8))
        assert stored
        assert_same(got, full)
    assert not sharded


def test_a_shard_without_a_connection_is_added_by_the_refresh(
    experiment, sharded, monkeypatch, caplog
):
    """The server refuses the shards' connections (``max_connections`` reached): the refresh
    adds those shards' events on its own connection, once."""
    history = History(experiment, seed=15, units=40)
    history.batch(4, events=80)
    assert_same(*snapshot(experiment, h(4))[1:])
    history.batch(8, events=80)

    def refuse():
        raise OperationalError("FATAL: sorry, too many clients already")

    refused = SimpleNamespace(ensure_connection=refuse, close=lambda: None)
    monkeypatch.setattr(incremental_shards, "connections", {DEFAULT_DB_ALIAS: refused})
    with caplog.at_level(logging.WARNING, logger="analysis.incremental_shards"):
        stored, got, full = snapshot(experiment, h(8))
    assert stored
    assert_same(got, full)
    assert_top_units_exact(experiment)
    assert sorted(sharded) == [1, 2]
    assert caplog.text.count("too many clients") == 2
    assert not UnitAggregateProgress.objects.filter(experiment=experiment).exists()
