"""Metrics from event properties in a release's step: filters and value properties give the
same per-unit values as in experiments (hand-computed here; SQLite, and PostgreSQL in CI), for
the mean-type statement and the quantile values alike, and the monitor passes them on."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from assignments.models import FlagExposure, MetricEvent
from experiments.filters import clean_filters
from experiments.services import metric_create
from releases import aggregation as agg
from releases import monitor
from releases.policy import MetricSpec

pytestmark = pytest.mark.django_db


def f(prop, op, value):
    return {"property": prop, "op": op, "value": value}


@pytest.fixture
def step(project, production, flag):
    """Units a, b on the new variation, c, d on the old; purchases with properties in the
    window (a purchase before its unit's exposure never counts)."""
    t0 = timezone.now().replace(microsecond=0) - timedelta(minutes=10)

    def expose(unit, variation):
        FlagExposure.objects.create(project=project, event_id=uuid.uuid4().hex,
                                    environment=production, flag=flag, variation=variation,
                                    unit_id=unit, ts=t0)  # fmt: skip

    def buy(unit, properties, minutes=1, value=1.0):
        MetricEvent.objects.create(project=project, event_id=uuid.uuid4().hex, name="purchase",
                                   unit_id=unit, value=value, ts=t0 + timedelta(minutes=minutes),
                                   properties=properties)  # fmt: skip

    for unit, variation in (("a", "on"), ("b", "on"), ("c", "off"), ("d", "off")):
        expose(unit, variation)
    buy("a", {"plan": "pro", "ms": 120})
    buy("a", {"plan": "free", "ms": 80})
    buy("b", {"plan": "pro", "ms": "slow"})  # not a number
    buy("b", None)
    buy("c", {"plan": "pro", "ms": 200}, value=5.0)
    buy("c", {"plan": "pro", "ms": 300}, minutes=-1)  # before c's exposure
    buy("d", {"plan": "team", "ms": 50})
    return {"environment_id": production.pk, "flag_id": flag.pk, "variations": ["off", "on"],
            "start": t0, "end": t0 + timedelta(minutes=5)}  # fmt: skip


def source(key, kind, filters=(), value_property=""):
    spec = MetricSpec(key, kind)
    return agg.MetricSource(
        spec, "purchase", "", tuple(clean_filters(list(filters))), value_property
    )


def test_a_step_counts_filtered_events_and_property_values(project, step):
    sources = [
        source("pro", "binomial", [f("plan", "eq", "pro")]),
        source("not-pro", "count", [f("plan", "neq", "pro")]),
        source("ms", "mean", value_property="ms"),
        source("pro-ms", "mean", [f("plan", "in", ["pro", "team"])], "ms"),
        source("all", "count"),
    ]
    stats = agg.mean_stats(project_id=project.pk, sources=sources, **step)
    on, off = stats["on"], stats["off"]
    # on: a (pro 120, free 80), b (pro "slow", no properties); off: c (pro 200), d (team 50)
    assert (on["pro"].sum, off["pro"].sum) == (2, 1)
    assert (on["not-pro"].sum, off["not-pro"].sum) == (2, 1)  # a's free, b's bare; d's team
    assert (on["ms"].sum, on["ms"].sum_sq) == (200, 200**2)  # a: 120 + 80; b adds nothing
    assert (off["ms"].sum, off["ms"].sum_sq) == (250, 200**2 + 50**2)
    assert (on["pro-ms"].sum, off["pro-ms"].sum) == (120, 250)
    assert (on["all"].sum, off["all"].sum, on["all"].n) == (4, 2, 2)


def test_a_quantile_reads_the_value_property_of_matching_events_only(project, step):
    values = agg.quantile_values(
        project_id=project.pk,
        event_name="purchase",
        filters=tuple(clean_filters([f("plan", "eq", "pro")])),
        value_property="ms",
        **step,
    )
    assert values["on"][0].tolist() == [120.0]  # b's pro purchase has no number: no sample
    assert values["off"][0].tolist() == [200.0]
    plain = agg.quantile_values(project_id=project.pk, event_name="purchase", **step)
    assert sorted(plain["on"][0].tolist()) == [1.0, 1.0, 1.0, 1.0]


def test_the_monitor_passes_a_metrics_filters_on(project):
    metric = metric_create(
        project=project, key="p95-pro", name="p95 pro", kind="quantile", event_name="purchase",
        quantile=0.95, filters=[f("plan", "eq", "pro")], value_property="ms",
    )  # fmt: skip

    class Row:
        def __init__(self, metric):
            self.metric = metric

    [src] = monitor._sources([Row(metric)])
    assert src.filters == tuple(clean_filters([f("plan", "eq", "pro")]))
    assert src.value_property == "ms" and src.reads_properties
