"""A release's analysis reads its step's window, not the flag's history (PostgreSQL's plans on
a table with a long history, analysed): the exposures through ``flag_exposure_env_flag_ts``
with the window's bounds in the index condition, the events by one ``metricevent_unit_ts``
lookup per unit."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from assignments.models import FlagExposure, MetricEvent
from releases import aggregation as agg
from releases.policy import MetricSpec

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan"),
]


@pytest.fixture
def window(project, production, flag):
    """20,000 units of history over 20 days, 200 in the last 5 minutes (the window)."""
    now = timezone.now()
    exposures, events = [], []
    for i in range(20_200):
        ts = now - timedelta(minutes=2) if i >= 20_000 else now - timedelta(days=20, minutes=-i)
        unit = f"u{i}"
        exposures.append(FlagExposure(project=project, event_id=uuid.uuid4().hex,
                                      environment=production, flag=flag, variation="on",
                                      unit_id=unit, ts=ts))  # fmt: skip
        events.append(MetricEvent(project=project, event_id=uuid.uuid4().hex, name="request",
                                  unit_id=unit, value=1.0, ts=ts))  # fmt: skip
    FlagExposure.objects.bulk_create(exposures, batch_size=5000)
    MetricEvent.objects.bulk_create(events, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE assignments_flagexposure")
        cursor.execute("ANALYZE assignments_metricevent")
    return {"environment_id": production.pk, "flag_id": flag.pk, "variations": ["off", "on"],
            "start": now - timedelta(minutes=5), "end": now}  # fmt: skip


def _plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _reads_the_window_only(plan: str) -> bool:
    """The exposures of the window and not the history: an index range on the window's bounds,
    or, on the partitioned table (PostgreSQL, assignments/partitions.py), a scan of only this
    week's partition of the project, which holds the window (the history, 6 to 20 days old, is
    in other partitions, pruned): no scan of the history either way."""
    scans = [line for line in plan.splitlines() if " on assignments_flagexposure" in line]
    if not scans or any("Seq Scan" in line and "_w" not in line for line in scans):
        return False
    if "flag_exposure_env_flag_ts" in plan:
        return "ts >=" in plan.split("flag_exposure_env_flag_ts", 1)[1]
    return all("_default" not in line for line in scans)


def test_the_window_is_an_index_range(window):
    plan = _plan(*agg.counts_statement(**window))
    assert _reads_the_window_only(plan), plan


def test_events_are_looked_up_per_unit(project, window):
    sources = [agg.MetricSource(MetricSpec("err", "ratio"), "error", "request")]
    plan = _plan(*agg.means_statement(project_id=project.pk, sources=sources, **window))
    assert _reads_the_window_only(plan) and "metricevent_unit_ts" in plan, plan
    lookup = plan.split("metricevent_unit_ts", 1)[1].split("\n")[1]
    assert "unit_id" in lookup, plan
    assert "Seq Scan on assignments_metricevent" not in plan, plan


def test_events_are_looked_up_per_unit_even_with_stale_statistics(project, production, flag):
    """Statistics taken while the tables were empty (a fresh installation, autovacuum behind)
    must not turn the per-unit lookup into a scan of the project's events per unit (CI saw a
    step take minutes that way before the lookup was a fenced LATERAL)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE assignments_flagexposure")
        cursor.execute("ANALYZE assignments_metricevent")
    now = timezone.now()
    FlagExposure.objects.bulk_create(
        FlagExposure(project=project, event_id=f"x{i}", environment=production, flag=flag,
                     variation="on", unit_id=f"u{i}", ts=now - timedelta(minutes=1))
        for i in range(2000)
    )  # fmt: skip
    MetricEvent.objects.bulk_create(
        MetricEvent(project=project, event_id=f"m{i}", name="request", unit_id=f"u{i % 2000}",
                    value=1.0, ts=now - timedelta(seconds=30))
        for i in range(6000)
    )  # fmt: skip
    window = {"environment_id": production.pk, "flag_id": flag.pk, "variations": ["off", "on"],
              "start": now - timedelta(minutes=5), "end": now}  # fmt: skip
    sources = [agg.MetricSource(MetricSpec("err", "ratio"), "error", "request")]
    plan = _plan(*agg.means_statement(project_id=project.pk, sources=sources, **window))
    lookup = plan.split("metricevent_unit_ts", 1)[1].split("\n")[1]
    assert "Index Cond" in lookup and "unit_id" in lookup, plan
