"""End to end: a real Celery worker (prefork, as ``make run`` starts it) adds a round of new
events to the stored aggregates in shards, on connections of its own (PostgreSQL;
analysis/incremental_shards.py), and its snapshot equals the full statement's."""

import random
import time
from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.utils import timezone

from analysis import aggregation
from analysis.compute import _metric_spec
from analysis.models import AggregateState, ResultSnapshot, UnitAggregateProgress
from assignments.models import Exposure, MetricEvent
from experiments.models import Experiment
from experiments.services import user_token_create
from tests.e2e.test_flow import running_stack
from tests.factories import running_experiment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="shards are a PostgreSQL path"),
]


def ingest(experiment, rng, units, events, tag):
    """Exposures of ``units`` (each to its variant) and ``events`` purchases among them."""
    variants = list(experiment.variants.order_by("position"))
    now = timezone.now()
    Exposure.objects.bulk_create(
        (
            Exposure(
                project=experiment.project,
                event_id=f"{tag}-x{u}",
                experiment=experiment,
                variant=variants[u % 2],
                unit_id=f"u{u}",
                ts=now - timedelta(minutes=30),
            )
            for u in units
        ),
        ignore_conflicts=True,
    )
    MetricEvent.objects.bulk_create(
        MetricEvent(
            project=experiment.project,
            event_id=f"{tag}-e{i}",
            name="purchase",
            unit_id=f"u{rng.choice(units)}",
            value=round(rng.uniform(1, 100), 2),
            ts=now - timedelta(minutes=rng.uniform(1, 29)),
        )
        for i in range(events)
    )


def analysed(people, base, logs, count):
    """Asks the worker for a snapshot and waits until the experiment has ``count``."""
    r = people.post(f"{base}/api/v1/projects/shop/experiments/checkout-v2/analyze")
    assert r.status_code == 202, r.text
    for _ in range(240):
        if ResultSnapshot.objects.count() >= count:
            return ResultSnapshot.objects.order_by("-id").first()
        time.sleep(0.5)
    raise AssertionError("no snapshot:\n" + (logs / "worker.log").read_text()[-5000:])


def test_the_worker_adds_a_round_in_shards_and_equals_the_full_statement(admin_user, metrics):
    project = metrics[0].project
    experiment = running_experiment(project)
    begun = timezone.now() - timedelta(hours=2)
    Experiment.objects.filter(pk=experiment.pk).update(phase_started_at=begun, started_at=begun)
    experiment.refresh_from_db()
    people = requests.Session()
    people.headers["Authorization"] = f"Token {user_token_create(user=admin_user).token}"
    rng = random.Random(5)
    env = {"ABACUS_INCREMENTAL_CONNECTIONS": "3", "ABACUS_INCREMENTAL_PARALLEL_FROM": "1"}
    with running_stack(env=env, pool=None) as (base, logs):
        ingest(experiment, rng, range(300), 900, "a")
        analysed(people, base, logs, 1)  # builds the stored rows
        state = AggregateState.objects.get(experiment=experiment)
        ingest(experiment, rng, range(250, 400), 600, "b")  # 100 new units, 600 new events
        time.sleep(1.1)  # a later cut-off (whole seconds)
        snapshot = analysed(people, base, logs, 2)
    after = AggregateState.objects.get(experiment=experiment)
    assert after.generation == state.generation, "added to the rows, not rebuilt"
    assert after.event_watermark > state.event_watermark
    progress = UnitAggregateProgress.objects.filter(experiment=experiment)
    assert sorted(progress.values_list("shard", "event_watermark")) == [
        (1, after.event_watermark),
        (2, after.event_watermark),
    ], "the round was not added in shards"
    full = aggregation.experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=project.pk,
        metrics=[_metric_spec(em) for em in experiment.experiment_metrics.select_related("metric")],
        since=experiment.phase_started_at or experiment.started_at,
        through=snapshot.data_through,
    )
    keys = dict(experiment.variants.values_list("pk", "key"))
    rows = {(r.metric_key, r.variant): r for r in snapshot.rows.all()}
    assert rows
    for key, metric in full.metrics.items():
        for variant_id, stats in metric.stats.items():
            row = rows[(key, keys[variant_id])]
            assert row.n == stats.n, (key, variant_id)
            assert row.sum == pytest.approx(stats.sum, rel=1e-12), (key, variant_id)
            assert row.sum_sq == pytest.approx(stats.sum_sq, rel=1e-12), (key, variant_id)
    assert "rebuilding" not in (logs / "worker.log").read_text()
