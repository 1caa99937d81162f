"""The incremental analysis under concurrent ingestion (PostgreSQL): events commit out of id
order across transactions, and no event is skipped or added twice (analysis/watermarks.py)."""

import random
import threading
import time

import pytest
from django.db import connection, connections, transaction

from analysis import aggregation, incremental, incremental_read
from analysis.models import AggregateState
from assignments.models import Exposure, MetricEvent
from experiments.models import Experiment
from tests.analysis.test_incremental import NAMES, assert_same, h, window
from tests.factories import running_experiment

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="transactions commit in id order on SQLite"
    ),
]


@pytest.fixture
def experiment(project, metrics, settings):
    settings.ABACUS_AGGREGATES_WAIT_SECONDS = 0.05
    experiment = running_experiment(project)
    Experiment.objects.filter(pk=experiment.pk).update(phase_started_at=h(0), started_at=h(0))
    experiment.refresh_from_db()
    control = experiment.variants.order_by("position").first()
    Exposure.objects.bulk_create(
        Exposure(
            project=project,
            event_id=f"x{i}",
            experiment=experiment,
            variant=control,
            unit_id=f"u{i}",
            ts=h(1),
        )
        for i in range(5)
    )
    return experiment


def event(experiment, event_id, unit="u0", value=7.0):
    return MetricEvent.objects.create(
        project=experiment.project,
        event_id=event_id,
        name="purchase",
        unit_id=unit,
        value=value,
        ts=h(2),
    )


def consistent(experiment, through):
    """The stored path's and the full statement's aggregates in one REPEATABLE READ snapshot
    (after bringing the stored rows up to date)."""
    w = window(experiment, through)
    assert incremental.refresh(**w)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return incremental_read.experiment_aggregates(**w), aggregation.experiment_aggregates(**w)


def test_an_event_that_commits_after_one_with_a_higher_id_is_counted_once(experiment):
    """A transaction inserts an event (a lower id) and stays open while a later event (a higher
    id) commits and a snapshot runs: the watermark stays below the open transaction's id, the
    snapshot reads the later event from the events table, and once the first commits the next
    snapshot adds it, exactly once. A watermark at the highest id visible would skip it."""
    consistent(experiment, h(10))
    inserted, release = threading.Event(), threading.Event()
    ids = {}

    def slow_writer():
        try:
            with transaction.atomic():
                ids["slow"] = event(experiment, "slow", value=100.0).pk
                inserted.set()
                release.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inserted.wait(10)
        ids["fast"] = event(experiment, "fast", value=1.0).pk
        assert ids["fast"] > ids["slow"]
        got, full = consistent(experiment, h(11))
        assert_same(got, full)
        assert AggregateState.objects.get(experiment=experiment).event_watermark < ids["slow"]
    finally:
        release.set()
        writer.join(10)
    got, full = consistent(experiment, h(12))
    assert_same(got, full)
    state = AggregateState.objects.get(experiment=experiment)
    assert state.event_watermark >= ids["fast"]
    # u0's revenue is 101 among four zeros: the 0.8-quantile cap is 0.2 * 101 (1 if "slow"
    # were skipped, 201 if it were added twice).
    assert got.metrics["revenue"].caps["value"] == pytest.approx(0.2 * 101)


def test_snapshots_during_concurrent_ingestion_equal_the_full_statement(experiment):
    """Writers commit batches of exposures and events out of id order (each sleeps a random
    moment inside its transaction) while snapshots run: every snapshot equals the full
    statement in the same database snapshot, and so does the last one after the writers
    stop."""
    stop = threading.Event()
    errors: list[BaseException] = []
    variants = list(experiment.variants.values_list("pk", flat=True))

    def writer(seed: int):
        rng = random.Random(seed)
        n = 0
        try:
            while not stop.is_set():
                with transaction.atomic():
                    for _ in range(rng.randint(1, 4)):
                        n += 1
                        unit = f"u{rng.randrange(12)}"
                        if rng.random() < 0.2:
                            Exposure.objects.create(
                                project=experiment.project,
                                event_id=f"w{seed}-x{n}",
                                experiment=experiment,
                                variant_id=rng.choice(variants),
                                unit_id=unit,
                                ts=h(rng.uniform(0, 20)),
                            )
                        MetricEvent.objects.create(
                            project=experiment.project,
                            event_id=f"w{seed}-e{n}",
                            name=rng.choice(NAMES),
                            unit_id=unit,
                            value=rng.choice([1.0, 2.5, rng.uniform(0, 300)]),
                            ts=h(rng.uniform(-20, 20)),
                        )
                        time.sleep(rng.uniform(0, 0.02))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    try:
        for step in range(8):
            got, full = consistent(experiment, h(5 + 2 * step))
            assert_same(got, full)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors
    got, full = consistent(experiment, h(30))
    assert_same(got, full)
    state = AggregateState.objects.get(experiment=experiment)
    assert state.event_watermark == MetricEvent.objects.order_by("-id").first().pk
