"""The holdout's long-term comparison on constructed data (SQLite and PostgreSQL): units per arm
from the holdout's exposures, each unit's metric events from its first exposure to the cut-off
(the conversion window does not apply), the statistics equal to the engine's on per-unit values
computed here in Python, the sample ratio check, unsupported metrics, the stored snapshot, the
task, the API and the page."""

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from rest_framework.test import APIClient

from analysis.holdouts import (
    ALPHA,
    GENERAL_ARM,
    HOLDOUT_ARM,
    TUNING_N,
    holdout_analyze,
    holdout_compare,
)
from analysis.models import HoldoutSnapshot
from analysis.tasks import run_holdout, schedule_holdouts
from assignments.models import HoldoutExposure, MetricEvent
from experiments.models import Holdout
from experiments.services import api_key_create, metric_create
from experiments.services.holdouts import holdout_create, holdout_end, holdout_start
from stats import AnalysisConfig, SampleStats, analyze_metric
from tests.analysis.test_aggregation import strategy  # noqa: F401 - each test reads both ways

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CUTOFF = T0 + timedelta(days=30)


@pytest.fixture
def catalog(project):
    """A metric of each kind the comparison supports, one it does not (quantile), and a short
    conversion window that must not apply."""
    make = metric_create
    make(project=project, key="buyers", name="Buyers", kind="binomial", event_name="purchase",
         conversion_window_hours=1)  # fmt: skip
    make(project=project, key="revenue", name="Revenue", kind="mean", event_name="purchase")
    make(project=project, key="errors", name="Errors", kind="count", event_name="error",
         direction="decrease")  # fmt: skip
    make(project=project, key="aov", name="Order value", kind="ratio", event_name="purchase",
         denominator_event="order")  # fmt: skip
    make(project=project, key="latency", name="Latency p95", kind="quantile",
         event_name="latency", quantile=0.95)  # fmt: skip


@pytest.fixture
def holdout(project, catalog):
    holdout = holdout_start(holdout=holdout_create(project=project, name="H", share=0.1))
    Holdout.objects.filter(pk=holdout.pk).update(started_at=T0)
    holdout.refresh_from_db()
    return holdout


def _expose(holdout, unit, arm, at):
    HoldoutExposure.objects.create(holdout=holdout, unit_id=unit, arm=arm, ts=at)


def _event(project, unit, name, at, value=1.0, n=[0]):  # noqa: B006 - a counter for event ids
    n[0] += 1
    MetricEvent.objects.create(
        project=project, event_id=f"e{n[0]}", name=name, unit_id=unit, value=value, ts=at
    )


def _per_unit(units, events, cutoff):
    """Each metric's per-unit values, by arm, computed in Python from the raw rows: the events
    in [t0, cut-off] (the reference for the SQL)."""
    values = {HOLDOUT_ARM: {}, GENERAL_ARM: {}}
    for unit, (arm, t0) in units.items():
        mine = [(n, ts, v) for u, n, ts, v in events if u == unit and t0 <= ts <= cutoff]
        purchases = [v for n, _, v in mine if n == "purchase"]
        values[arm][unit] = {
            "buyers": float(bool(purchases)),
            "revenue": sum(purchases),
            "errors": float(sum(1 for n, _, _ in mine if n == "error")),
            "aov": (sum(purchases), sum(v for n, _, v in mine if n == "order")),
        }
    return values


def _stats(rows, key):
    if key == "aov":
        y = np.array([r[key][0] for r in rows])
        d = np.array([r[key][1] for r in rows])
        return SampleStats(
            n=len(y), sum=y.sum(), sum_sq=(y * y).sum(), den_sum=d.sum(),
            den_sum_sq=(d * d).sum(), sum_prod=(y * d).sum(),
        )  # fmt: skip
    y = np.array([r[key] for r in rows])
    return SampleStats(n=len(y), sum=y.sum(), sum_sq=(y * y).sum())


def _world(project, holdout, seed=3, lift=0.0, units=240):
    """Units in both arms first seen over the month, with events before t0, inside, and after
    the cut-off; the general arm converts ``lift`` more often."""
    rng = random.Random(seed)
    seen, events = {}, []
    for i in range(units):
        arm = HOLDOUT_ARM if i % 2 == 0 else GENERAL_ARM
        unit = f"u{i}"
        t0 = T0 + timedelta(hours=rng.uniform(0, 24 * 25))
        seen[unit] = (arm, t0)
        _expose(holdout, unit, arm, t0)
        rate = 0.3 + (lift if arm == GENERAL_ARM else 0.0)
        for _ in range(rng.randint(0, 4)):
            at = t0 + timedelta(hours=rng.uniform(-48, 24 * 40))
            name = "purchase" if rng.random() < rate else rng.choice(["error", "order"])
            value = round(rng.uniform(1, 100), 2)
            events.append((unit, name, at, value))
            _event(project, unit, name, at, value)
            if name == "purchase":
                events.append((unit, "order", at, 1.0))
                _event(project, unit, "order", at, 1.0)
    return seen, events


def test_the_comparison_equals_the_engine_on_per_unit_values_computed_here(project, holdout):
    seen, events = _world(project, holdout)
    comparison = holdout_compare(holdout, CUTOFF)
    assert comparison["units"] == {"holdout": 120, "general": 120}
    reference = _per_unit(seen, events, CUTOFF)
    rows = {r["metric"]: r for r in comparison["metrics"]}
    assert list(rows) == ["aov", "buyers", "errors", "latency", "revenue"]
    for key in ("buyers", "revenue", "errors", "aov"):
        kind = {"buyers": "binomial", "revenue": "mean", "errors": "count", "aov": "ratio"}[key]
        direction = "decrease" if key == "errors" else "increase"
        control = _stats(list(reference[HOLDOUT_ARM].values()), key)
        treatment = _stats(list(reference[GENERAL_ARM].values()), key)
        expected = analyze_metric(
            control,
            treatment,
            AnalysisConfig(kind=kind, alpha=ALPHA, tuning_n=TUNING_N, direction=direction),
        )
        row = rows[key]
        assert row["holdout_n"] == expected.control_n == 120
        for mine, theirs in (
            ("holdout_mean", "control_mean"),
            ("general_mean", "variant_mean"),
            ("lift_rel", "lift_rel"),
            ("ci_low", "ci_low"),
            ("ci_high", "ci_high"),
            ("p_value", "p_value"),
        ):
            want = getattr(expected, theirs)
            assert row[mine] == (want if want is None else pytest.approx(want, rel=1e-9)), key
    assert rows["latency"]["status"] == "error" and "quantile" in rows["latency"]["error"]
    assert all(r["adjusted_p_value"] >= r["p_value"] for r in rows.values() if r.get("p_value"))
    assert comparison["warnings"] == []


def test_events_before_first_exposure_and_after_the_cutoff_do_not_count(project, holdout):
    _expose(holdout, "a", HOLDOUT_ARM, T0 + timedelta(days=2))
    _expose(holdout, "b", GENERAL_ARM, T0 + timedelta(days=2))
    _event(project, "a", "purchase", T0 + timedelta(days=1), 50)  # before its t0
    _event(project, "a", "purchase", T0 + timedelta(days=20), 7)  # 18 days after: counts
    _event(project, "b", "purchase", CUTOFF + timedelta(hours=1), 9)  # after the cut-off
    _expose(holdout, "late", GENERAL_ARM, CUTOFF + timedelta(hours=1))  # seen after: not a unit
    rows = {r["metric"]: r for r in holdout_compare(holdout, CUTOFF)["metrics"]}
    assert rows["revenue"]["holdout_mean"] == 7 and rows["revenue"]["general_mean"] == 0
    assert rows["buyers"]["holdout_n"] == 1 and rows["buyers"]["general_n"] == 1


def test_an_ended_holdout_is_compared_up_to_its_end(project, holdout):
    _expose(holdout, "a", HOLDOUT_ARM, T0 + timedelta(days=1))
    _expose(holdout, "b", GENERAL_ARM, T0 + timedelta(days=1))
    _event(project, "b", "purchase", T0 + timedelta(days=5), 3)
    _event(project, "b", "purchase", T0 + timedelta(days=15), 4)
    holdout_end(holdout=holdout)
    Holdout.objects.filter(pk=holdout.pk).update(ended_at=T0 + timedelta(days=10))
    holdout.refresh_from_db()
    comparison = holdout_compare(holdout, CUTOFF)
    assert comparison["through"] == T0 + timedelta(days=10)
    rows = {r["metric"]: r for r in comparison["metrics"]}
    assert rows["revenue"]["general_mean"] == 3


def test_a_clear_effect_of_what_shipped_is_detected_with_its_direction(project, holdout):
    _world(project, holdout, seed=8, lift=0.5, units=600)
    rows = {r["metric"]: r for r in holdout_compare(holdout, CUTOFF)["metrics"]}
    assert rows["buyers"]["status"] == "better" and rows["buyers"]["ci_low"] > 0
    assert rows["errors"]["lift_rel"] < 0 and rows["errors"]["status"] in ("better", "neutral")


def test_unequal_arms_raise_a_sample_ratio_warning(project, holdout):
    for i in range(300):
        _expose(holdout, f"u{i}", HOLDOUT_ARM if i < 100 else GENERAL_ARM, T0 + timedelta(hours=1))
    comparison = holdout_compare(holdout, CUTOFF)
    assert comparison["srm_p_value"] < 0.001
    assert any("Sample ratio mismatch" in w for w in comparison["warnings"])


def test_the_snapshot_is_stored_once_per_cutoff_and_the_beat_schedules_holdouts(
    project, holdout, monkeypatch
):
    """One snapshot per cut-off (a rerun returns it); the beat queues running holdouts, and an
    ended one until a snapshot reaches its end."""
    _world(project, holdout, units=40)
    first = holdout_analyze(holdout_id=holdout.pk, through=CUTOFF)
    again = holdout_analyze(holdout_id=holdout.pk, through=CUTOFF)
    assert first.pk == again.pk and HoldoutSnapshot.objects.count() == 1
    assert first.units == {"holdout": 20, "general": 20} and len(first.metrics) == 5
    assert run_holdout.apply(args=[holdout.pk, CUTOFF.isoformat()]).get() == first.pk
    sent = []
    monkeypatch.setattr(run_holdout, "apply_async", lambda args, expires: sent.append(args))
    assert schedule_holdouts.apply().get() == 1 and sent == [[holdout.pk]]
    holdout_end(holdout=holdout)
    assert schedule_holdouts.apply().get() == 1  # its final comparison is still due
    run_holdout.apply(args=[holdout.pk])
    assert schedule_holdouts.apply().get() == 0


def test_the_api_returns_the_latest_comparison_to_members_and_read_keys(project, holdout, api):
    _world(project, holdout, units=40)
    holdout_analyze(holdout_id=holdout.pk, through=CUTOFF)
    url = f"/api/v1/projects/shop/holdouts/{holdout.pk}/results"
    body = api.get(url).json()
    assert body["holdout"]["status"] == "running" and body["method"] == "sequential"
    assert body["comparison"]["units"] == {"holdout": 20, "general": 20}
    assert {r["metric"] for r in body["comparison"]["metrics"]} >= {"buyers", "aov"}
    assert len(api.get(url + "?history=true").json()["history"]) == 1
    assert api.get(url + "?history=maybe").status_code == 400
    key = APIClient()
    secret = api_key_create(project=project, name="r", scopes=["read"]).secret
    key.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert key.get(url).status_code == 200
    queued = api.post(f"/api/v1/projects/shop/holdouts/{holdout.pk}/analyze")
    assert queued.status_code == 202


def test_the_page_shows_the_lifts_and_intervals(client, admin_user, project, holdout):
    _world(project, holdout, units=80)
    holdout_analyze(holdout_id=holdout.pk, through=CUTOFF)
    client.force_login(admin_user)
    page = client.get("/p/shop/holdout/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="holdout-metrics"' in text and 'data-metric="buyers"' in text
    assert "always valid" in text and 'id="end-holdout"' in text
