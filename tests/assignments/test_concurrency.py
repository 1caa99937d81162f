"""Race safety on PostgreSQL: concurrent first assignments agree, concurrent retries store once."""

import threading

import pytest
from django.db import connection, connections

from assignments.models import Assignment, Exposure, MetricEvent
from assignments.services import assign as assign_module
from assignments.services import assignments_get_or_create, events_ingest
from tests.factories import running_experiment

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="races need PostgreSQL's concurrent writers"
    ),
]
THREADS = 6
UNITS = [f"racer-{i}" for i in range(200)]


def _run_in_threads(target, count=THREADS):
    """Run target(i) in `count` threads, each on its own database connection."""
    results: list = [None] * count
    errors: list = []

    def run(i):
        try:
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_first_assignments_of_one_unit_all_get_the_stored_row(
    project, metrics, monkeypatch
):
    """Every thread looks the units up (none stored), then each proposes a *different* variant
    at the same moment: exactly one row per unit is stored and every thread answers with it."""
    running_experiment(project)
    looked_up = threading.Barrier(THREADS)
    proposal = threading.local()
    real = assign_module._decide

    def racing_decide(spec, units, stored):
        real(spec, units, stored)
        looked_up.wait(timeout=30)  # all threads have read "not stored" before anyone inserts
        return [spec.variants[proposal.index % 2].key] * len(units)

    monkeypatch.setattr(assign_module, "_decide", racing_decide)

    def assign(i):
        proposal.index = i
        answers = assignments_get_or_create(project=project, units=[(u, {}) for u in UNITS])
        return [a["checkout-v2"]["variant"] for a in answers]

    results = _run_in_threads(assign)
    stored = dict(Assignment.objects.values_list("unit_id", "variant__key"))
    assert len(stored) == len(UNITS) == Assignment.objects.count()
    expected = [stored[u] for u in UNITS]
    assert all(r == expected for r in results)
    assert set(expected) <= {"control", "treatment"}


def test_concurrent_single_unit_requests_store_one_row(project, metrics):
    running_experiment(project)
    start = threading.Barrier(THREADS)

    def assign(i):
        start.wait(timeout=30)
        [answer] = assignments_get_or_create(project=project, units=[("same-unit", {})])
        return answer["checkout-v2"]["variant"]

    results = _run_in_threads(assign)
    assert len(set(results)) == 1
    assert Assignment.objects.get(unit_id="same-unit").variant.key == results[0]


def test_concurrent_retries_of_one_batch_store_each_event_once(project, metrics):
    running_experiment(project)
    events = []
    for i in range(300):
        events.append(
            {
                "event_id": f"m{i}",
                "type": "metric",
                "name": "purchase",
                "unit_id": f"u{i}",
                "timestamp": "2026-11-29T10:00:00Z",
            }
        )
        events.append(
            {
                "event_id": f"x{i}",
                "type": "exposure",
                "experiment": "checkout-v2",
                "variant": "control",
                "unit_id": f"u{i}",
                "timestamp": "2026-11-29T10:00:00Z",
            }
        )
    start = threading.Barrier(THREADS)

    def ingest(i):
        start.wait(timeout=30)
        result = events_ingest(project=project, events=events[i * 50 :] + events[: i * 50])
        return result.accepted, result.duplicates

    results = _run_in_threads(ingest)
    assert sum(a for a, _ in results) == len(events)
    assert sum(d for _, d in results) == len(events) * (THREADS - 1)
    assert MetricEvent.objects.count() == Exposure.objects.count() == 300
    assert Assignment.objects.count() == 300
