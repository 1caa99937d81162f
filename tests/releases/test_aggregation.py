"""The step's SQL equals the same numbers computed in Python from the rows: the window, the
unit's first exposure in it, units served both variations excluded, other flags and
environments ignored, every metric kind (on SQLite here, on PostgreSQL in CI)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from assignments.models import FlagExposure, MetricEvent
from experiments.models import Environment
from flags.services import flag_create
from releases import aggregation as agg
from releases.policy import MetricSpec

pytestmark = pytest.mark.django_db

SOURCES = [
    agg.MetricSource(MetricSpec("conv", "binomial"), "purchase"),
    agg.MetricSource(MetricSpec("n", "count"), "click"),
    agg.MetricSource(MetricSpec("rev", "mean"), "purchase"),
    agg.MetricSource(MetricSpec("err", "ratio"), "error", "request"),
]


def _rows(project, production, flag):
    rng = np.random.default_rng(7)
    t0 = timezone.now().replace(microsecond=0)
    other_flag = flag_create(project=project, key="other", name="Other")
    staging = Environment.objects.get(project=project, key="staging")
    exposures, events, truth = [], [], []

    def ev(name, unit, value, ts):
        events.append(MetricEvent(project=project, event_id=uuid.uuid4().hex, name=name,
                                  unit_id=unit, value=value, ts=ts))  # fmt: skip
        truth.append((name, unit, value, ts))

    def ex(unit, variation, ts, f=flag, env=production):
        exposures.append(FlagExposure(project=project, event_id=uuid.uuid4().hex,
                                      environment=env, flag=f, variation=variation,
                                      unit_id=unit, ts=ts))  # fmt: skip

    for i in range(120):
        unit = f"u{i}"
        variation = "on" if i % 3 == 0 else "off"
        first = t0 + timedelta(seconds=int(rng.integers(0, 50)))
        ex(unit, variation, first)
        ex(unit, variation, first + timedelta(seconds=5))
        if i % 17 == 0:
            ex(unit, "on" if variation == "off" else "off", first + timedelta(seconds=7))
        if i % 11 == 0:
            ex(unit, variation, t0 - timedelta(seconds=30))  # before the window: not its start
        for k in range(int(rng.integers(0, 4))):
            ts = first + timedelta(seconds=k)
            ev("request", unit, 1.0, ts)
            if rng.random() < 0.3:
                ev("error", unit, 1.0, ts)
            ev("latency_ms", unit, float(rng.exponential(100)), ts)
        if rng.random() < 0.4:
            ev("purchase", unit, float(rng.integers(1, 50)), first + timedelta(seconds=2))
        if rng.random() < 0.5:
            ev("click", unit, 1.0, first + timedelta(seconds=1))
            ev("click", unit, 1.0, first + timedelta(seconds=3))
        ev("purchase", unit, 99.0, first - timedelta(seconds=1))  # before its exposure
        ev("purchase", unit, 77.0, t0 + timedelta(minutes=5))  # after the cut-off
    ex("x-other-flag", "on", t0 + timedelta(seconds=1), f=other_flag)
    ex("x-staging", "on", t0 + timedelta(seconds=1), env=staging)
    FlagExposure.objects.bulk_create(exposures)
    MetricEvent.objects.bulk_create(events)
    return t0, t0 + timedelta(minutes=1), exposures, truth


def _expected(exposures, truth, flag, production, start, end):
    seen: dict[str, set] = {}
    first: dict[str, object] = {}
    for e in exposures:
        if e.flag_id != flag.pk or e.environment_id != production.pk or not start <= e.ts < end:
            continue
        seen.setdefault(e.unit_id, set()).add(e.variation)
        first[e.unit_id] = min(first.get(e.unit_id, e.ts), e.ts)
    units = {u: next(iter(v)) for u, v in seen.items() if len(v) == 1}
    excluded = sum(1 for v in seen.values() if len(v) > 1)
    per_unit = {u: [] for u in units}
    for name, unit, value, ts in truth:
        if unit in units and first[unit] <= ts < end:
            per_unit[unit].append((name, value))
    return units, excluded, per_unit


def test_step_sql_equals_python(project, production, flag):
    start, end, exposures, truth = _rows(project, production, flag)
    units, excluded, per_unit = _expected(exposures, truth, flag, production, start, end)
    ids = {"environment_id": production.pk, "flag_id": flag.pk, "start": start, "end": end}
    counts = agg.window_counts(variations=["off", "on"], **ids)
    assert counts == {
        "off": sum(v == "off" for v in units.values()),
        "on": sum(v == "on" for v in units.values()),
        "excluded": excluded,
    }
    assert excluded > 0
    stats = agg.mean_stats(project_id=project.pk, variations=["off", "on"], sources=SOURCES, **ids)
    for variation in ("off", "on"):
        members = [u for u, v in units.items() if v == variation]

        def col(fn, members=members):
            return np.array([fn(per_unit[u]) for u in members], dtype=float)

        conv = col(lambda evs: float(any(n == "purchase" for n, _ in evs)))
        clicks = col(lambda evs: sum(1.0 for n, _ in evs if n == "click"))
        rev = col(lambda evs: sum(v for n, v in evs if n == "purchase"))
        err = col(lambda evs: sum(v for n, v in evs if n == "error"))
        req = col(lambda evs: sum(v for n, v in evs if n == "request"))
        got = stats[variation]
        for key, x in (("conv", conv), ("n", clicks), ("rev", rev)):
            assert got[key].n == len(members)
            assert got[key].sum == pytest.approx(x.sum())
            assert got[key].sum_sq == pytest.approx((x**2).sum())
        e = got["err"]
        assert (e.sum, e.sum_sq) == pytest.approx(((err).sum(), (err**2).sum()))
        assert (e.den_sum, e.den_sum_sq, e.sum_prod) == pytest.approx(
            (req.sum(), (req**2).sum(), (err * req).sum())
        )
    values = agg.quantile_values(
        project_id=project.pk, variations=["off", "on"], event_name="latency_ms", **ids
    )
    for variation in ("off", "on"):
        expected = sorted(
            v for u, var in units.items() if var == variation
            for n, v in per_unit[u] if n == "latency_ms"
        )  # fmt: skip
        x, unit_index = values[variation]
        assert sorted(x.tolist()) == pytest.approx(expected)
        assert len(unit_index) == len(x)


def test_one_variation_window_for_the_historical_baseline(project, production, flag):
    start, end, exposures, truth = _rows(project, production, flag)
    ids = {"environment_id": production.pk, "flag_id": flag.pk, "start": start, "end": end}
    counts = agg.window_counts(variations=["off"], **ids)
    seen = {e.unit_id for e in exposures
            if e.flag_id == flag.pk and e.environment_id == production.pk
            and start <= e.ts < end and e.variation == "off"}  # fmt: skip
    assert counts["off"] == len(seen) and counts["excluded"] == 0
