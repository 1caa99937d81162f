"""A metric's recent baseline for the power calculator, computed in SQL, against pandas/numpy on
the same small data set (run on SQLite and, with DATABASE_URL, PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from rest_framework.test import APIClient

from assignments.models import Exposure, MetricEvent
from assignments.selectors import metric_baseline
from experiments.models import Role
from experiments.services import metric_create, project_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
URL = "/api/v1/projects/shop/metrics/{key}/baseline"


@pytest.fixture
def world(project, admin_user):
    """40 units over the last 10 days: exposures, purchases (with values), visits, an
    unrelated event; plus another project's rows with the same unit ids (never counted)."""
    specs = [
        ("purchase", "binomial", "purchase", "", 24),
        ("purchases", "count", "purchase", "", 72),
        ("revenue", "mean", "purchase", "", 48),
        ("aov", "ratio", "purchase", "visit", 24),
    ]
    for key, kind, event, den, hours in specs:
        metric_create(
            project=project,
            key=key,
            name=key,
            kind=kind,
            event_name=event,
            denominator_event=den,
            conversion_window_hours=hours,
        )
    experiment = running_experiment(project)
    variant = experiment.variants.first()
    other = project_create(slug="other", name="Other", owner=admin_user)
    metric_create(project=other, key="purchase", name="P", kind="binomial", event_name="purchase")
    other_experiment = running_experiment(other, "elsewhere")
    rng = np.random.default_rng(7)
    exposures, events = [], []

    def moment() -> datetime:  # to the microsecond, so the window edges are exercised
        return NOW - timedelta(microseconds=int(rng.integers(0, 10 * 86_400 * 10**6)))

    for u in range(40):
        unit = f"u{u}"
        if rng.random() < 0.7:
            exposures.append((project, experiment, variant, unit, moment()))
        for _ in range(int(rng.integers(0, 5))):
            name = rng.choice(["purchase", "visit", "visit", "scroll"])
            events.append((project, str(name), unit, float(rng.integers(1, 50)), moment()))
        events.append((other, "purchase", unit, 100.0, moment()))
    exposures.append((other, other_experiment, other_experiment.variants.first(), "u1", NOW))
    # Edge cases: an event exactly at the end of the unit's window does not count.
    t0 = NOW - timedelta(days=3, hours=5)
    exposures.append((project, experiment, variant, "edge", t0))
    events.append((project, "purchase", "edge", 5.0, t0 + timedelta(hours=48)))
    events.append((project, "purchase", "edge", 7.0, t0))
    Exposure.objects.bulk_create(
        Exposure(project=p, event_id=f"x{i}", experiment=e, variant=v, unit_id=unit, ts=ts)
        for i, (p, e, v, unit, ts) in enumerate(exposures)
    )
    MetricEvent.objects.bulk_create(
        MetricEvent(project=p, event_id=f"m{i}", name=n, unit_id=unit, value=val, ts=ts)
        for i, (p, n, unit, val, ts) in enumerate(events)
    )
    shop = [(unit, ts) for p, _, _, unit, ts in exposures if p == project]
    frame = pd.DataFrame(
        [(n, unit, val, ts) for p, n, unit, val, ts in events if p == project],
        columns=["name", "unit", "value", "ts"],
    )
    return {"exposures": pd.DataFrame(shop, columns=["unit", "ts"]), "events": frame}


def reference(world, kind, event, den, hours, days):
    """The per-unit values by pandas, then mean and variance by numpy (ratio: delta method,
    Var = s_m^2/mu_d^2 - 2 cov mu_m/mu_d^3 + mu_m^2 s_d^2/mu_d^4)."""
    since, last_start = NOW - timedelta(days=days), NOW - timedelta(hours=hours)
    activity = pd.concat([world["exposures"], world["events"][["unit", "ts"]]])
    activity = activity[(activity.ts >= since) & (activity.ts <= NOW)]
    t0 = activity.groupby("unit").ts.min()
    t0 = t0[t0 <= last_start]
    ev = world["events"].merge(t0.rename("t0"), left_on="unit", right_index=True)
    ev = ev[(ev.ts >= ev.t0) & (ev.ts < ev.t0 + timedelta(hours=hours))]
    num = ev[ev.name == event].groupby("unit").value
    y = (
        {
            "binomial": (num.size() > 0).astype(float),
            "count": num.size().astype(float),
            "mean": num.sum(),
            "ratio": num.sum(),
        }[kind]
        .reindex(t0.index, fill_value=0.0)
        .to_numpy(dtype=float)
    )
    d = ev[ev.name == den].groupby("unit").value.sum().reindex(t0.index, fill_value=0.0).to_numpy()
    n = len(y)
    if kind == "binomial":
        mean = y.mean()
        variance = mean * (1 - mean)
    elif kind == "ratio":
        mu_m, mu_d = y.mean(), d.mean()
        cov = np.cov(y, d, ddof=1)
        mean = y.sum() / d.sum()
        variance = (
            cov[0, 0] / mu_d**2 - 2 * cov[0, 1] * mu_m / mu_d**3 + mu_m**2 * cov[1, 1] / mu_d**4
        )
    else:
        mean, variance = y.mean(), y.var(ddof=1)
    return n, mean, variance, n / (days - hours / 24)


@pytest.mark.parametrize(
    ("key", "kind", "event", "den", "hours"),
    [
        ("purchase", "binomial", "purchase", "", 24),
        ("purchases", "count", "purchase", "", 72),
        ("revenue", "mean", "purchase", "", 48),
        ("aov", "ratio", "purchase", "visit", 24),
    ],
)
@pytest.mark.parametrize("days", [7, 9])
def test_baseline_matches_pandas(world, project, key, kind, event, den, hours, days):
    n, mean, variance, daily = reference(world, kind, event, den, hours, days)
    assert n > 10  # the data set exercises the computation
    got = metric_baseline(project.metrics.get(key=key), days=days, now=NOW)
    assert got.units == n and got.daily_units == pytest.approx(daily)
    assert got.mean == pytest.approx(mean, rel=1e-12)
    assert got.variance == pytest.approx(variance, rel=1e-9)


def test_the_window_edge_is_exclusive(world, project):
    """Unit "edge", revenue (48 h window): a purchase at t0 counts, one at t0 + 48 h does not
    (7, not 12)."""
    for name in ("purchase", "visit", "scroll"):
        MetricEvent.objects.filter(project=project, name=name).exclude(unit_id="edge").delete()
    Exposure.objects.filter(project=project).exclude(unit_id="edge").delete()
    got = metric_baseline(project.metrics.get(key="revenue"), days=7, now=NOW)
    assert got.units == 1 and got.mean == 7.0


def test_endpoint_answers_members_and_validates_days(world, project, make_member, monkeypatch):
    monkeypatch.setattr("experiments.selectors.timezone.now", lambda: NOW)
    viewer = APIClient()
    viewer.force_authenticate(make_member("vic", Role.VIEWER))
    r = viewer.get(URL.format(key="revenue"), {"days": 7})
    assert r.status_code == 200, r.content
    body = r.json()
    n, mean, variance, daily = reference(world, "mean", "purchase", "", 48, 7)
    assert body["units"] == n and body["mean"] == pytest.approx(mean)
    assert body["variance"] == pytest.approx(variance) and body["kind"] == "mean"
    assert body["daily_units"] == pytest.approx(daily)
    # days must exceed the conversion window (48 h): a 400 naming "days".
    r = viewer.get(URL.format(key="revenue"), {"days": 2})
    assert r.status_code == 400 and "days" in r.json()
    assert viewer.get(URL.format(key="revenue"), {"days": "x"}).status_code == 400
    assert viewer.get(URL.format(key="nope")).status_code == 404


def test_endpoint_without_data_and_for_non_members(project, metrics, django_user_model):
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(username="alice"))
    body = client.get(URL.format(key="purchase") + "/").json()
    assert body["units"] == 0 and body["mean"] is None and body["variance"] is None
    stranger = APIClient()
    stranger.force_authenticate(django_user_model.objects.create_user("s", "s@x.io", "pw-1234567"))
    assert stranger.get(URL.format(key="purchase")).status_code == 404
    assert APIClient().get(URL.format(key="purchase")).status_code in (401, 403)


def test_a_metric_from_event_properties_has_no_baseline_yet(project, django_user_model):
    """The baseline's SQL does not read properties: a filtered metric gets a 400 naming its
    filters, not a baseline of the unfiltered event."""
    metric_create(
        project=project, key="paid", name="Paid", kind="binomial", event_name="purchase",
        filters=[{"property": "plan", "op": "eq", "value": "pro"}],
    )  # fmt: skip
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(username="alice"))
    r = client.get(URL.format(key="paid"))
    assert r.status_code == 400 and r.json()["field"] == "filters"
    assert "event properties" in r.json()["detail"]
