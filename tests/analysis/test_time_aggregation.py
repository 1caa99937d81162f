"""The time views' SQL against hand-computed per-day values (run on SQLite and PostgreSQL)."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from analysis import aggregation
from analysis.aggregation import MetricSpec
from analysis.sql import time_views as sql
from analysis.sql.dialects import PostgresDialect, SqliteDialect
from analysis.time_aggregation import calendar_span, time_aggregates
from experiments.models import Experiment
from experiments.services import project_create
from stats import SampleStats
from tests.analysis.test_aggregation import T0, event, expose
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=[aggregation.HASH_JOIN, aggregation.INDEX_LOOKUP])
def strategy(request):
    """Every test runs with each way of reading events (index lookups: PostgreSQL only)."""
    if request.param == aggregation.INDEX_LOOKUP and connection.vendor != "postgresql":
        pytest.skip("index lookups are a PostgreSQL plan")
    return request.param


THROUGH = datetime(2026, 1, 4, 12, tzinfo=UTC)  # calendar days Jan 1 .. Jan 4 (partial)

REVENUE = MetricSpec("revenue", "mean", "purchase", window_hours=48)
BOUGHT = MetricSpec("bought", "binomial", "purchase", window_hours=48)
CLICKS = MetricSpec("clicks", "count", "click", window_hours=24)


def at(day: int, hour: float = 0.0) -> datetime:
    """January ``day``, 2026, at ``hour`` UTC."""
    return datetime(2026, 1, day, tzinfo=UTC) + timedelta(hours=hour)


@pytest.fixture
def experiment(project, metrics):
    experiment = running_experiment(project)
    Experiment.objects.filter(pk=experiment.pk).update(phase_started_at=T0, started_at=T0)
    return experiment


@pytest.fixture
def arms(experiment):
    return tuple(experiment.variants.order_by("-is_control", "position"))


@pytest.fixture
def scenario(experiment, arms):
    """Four analysed units; the per-day values each test expects are written next to it."""
    control, treatment = arms
    p = experiment.project
    # c1 (control): t0 Jan 1 10:00; 48 h window to Jan 3 10:00, 24 h window to Jan 2 10:00.
    expose(experiment, control, "c1", at(1, 10))
    event(p, "c1", "purchase", at(1, 12), 10)  # calendar day 0, day 0 since exposure
    event(p, "c1", "purchase", at(2, 9), 5)  # calendar day 1, still day 0 since exposure
    event(p, "c1", "purchase", at(2, 11), 7)  # calendar day 1, day 1 since exposure
    event(p, "c1", "purchase", at(3, 11), 3)  # after the 48 h window: never counted
    event(p, "c1", "click", at(1, 11))
    event(p, "c1", "click", at(1, 23))
    event(p, "c1", "click", at(2, 9.99))  # inside the 24 h window, calendar day 1
    event(p, "c1", "click", at(2, 10))  # exactly at the window's end: not counted
    # c2 (control): t0 Jan 2 20:00; day 1 since exposure ends Jan 4 20:00, after the cut-off.
    expose(experiment, control, "c2", at(2, 20))
    event(p, "c2", "purchase", at(3, 1), 4)  # calendar day 2, day 0 since exposure
    event(p, "c2", "purchase", at(4, 10), 6)  # calendar day 3; day 1 is incomplete
    # t1 (treatment): t0 exactly at midnight of day 0; its 48 h window ends at Jan 3 00:00.
    expose(experiment, treatment, "t1", at(1, 0))
    event(p, "t1", "purchase", at(1, 0), 20)  # at t0: counted (day 0 in both views)
    event(p, "t1", "purchase", at(2, 23.5), 1)  # calendar day 1, day 1 since exposure
    event(p, "t1", "purchase", at(3, 0), 50)  # at the window's end: not counted
    event(p, "t1", "click", at(1, 5))
    # t2 (treatment): t0 Jan 4 11:00, an hour before the cut-off.
    expose(experiment, treatment, "t2", at(4, 11))
    event(p, "t2", "purchase", at(4, 11.5), 8)
    event(p, "t2", "purchase", THROUGH + timedelta(seconds=1), 100)  # after the cut-off
    # m1: exposed to both variants: in no view.
    expose(experiment, control, "m1", at(1, 1))
    expose(experiment, treatment, "m1", at(1, 2))
    event(p, "m1", "purchase", at(1, 3), 1000)
    # Another project's events for the same unit never count.
    other = project_create(slug="other", name="Other")
    event(other, "c1", "purchase", at(1, 12), 999)
    return control, treatment


@pytest.fixture
def compute(strategy):
    """time_aggregates of an experiment's phase from T0, reading events by ``strategy``."""

    def run(experiment, *metrics, through=THROUGH, **kwargs):
        return _compute(experiment, *metrics, through=through, strategy=strategy, **kwargs)

    return run


def _compute(experiment, *metrics, through=THROUGH, **kwargs):
    return time_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=list(metrics),
        since=T0,
        through=through,
        **kwargs,
    )


def stats_of(*values):
    return SampleStats(
        n=len(values), sum=float(sum(values)), sum_sq=float(sum(v * v for v in values))
    )


def table(by_day, arms):
    """{day: (control stats, treatment stats)} with None for an arm without units."""
    control, treatment = arms
    return {day: (v.get(control.pk), v.get(treatment.pk)) for day, v in sorted(by_day.items())}


def test_calendar_days_count_the_units_whose_window_meets_the_day(scenario, experiment, compute):
    """Revenue (48 h window) by UTC day: Jan 1: c1 10 | t1 20; Jan 2: c1 5 + 7, c2 0 | t1 1;
    Jan 3: c1 0 (its event is after its window), c2 4 | none (t1's window ended at midnight);
    Jan 4 (partial): c2 6 | t2 8 (its event after the cut-off is not counted)."""
    result = compute(experiment, REVENUE)
    assert result.first_day == date(2026, 1, 1) and result.calendar_days == 4
    assert result.errors == {}
    assert table(result.metrics["revenue"].calendar, scenario) == {
        0: (stats_of(10), stats_of(20)),
        1: (stats_of(12, 0), stats_of(1)),
        2: (stats_of(0, 4), None),
        3: (stats_of(6), stats_of(8)),
    }


def test_days_since_exposure_count_only_complete_whole_days(scenario, experiment, compute):
    """Revenue by day since exposure (48 h window: days 0 and 1). Day 0: c1 10 + 5, c2 4 |
    t1 20 (t2's day 0 is not complete at the cut-off). Day 1: c1 7 | t1 1 (c2's day 1 ends
    after the cut-off)."""
    result = compute(experiment, REVENUE)
    assert table(result.metrics["revenue"].since_exposure, scenario) == {
        0: (stats_of(15, 4), stats_of(20)),
        1: (stats_of(7), stats_of(1)),
    }


def test_binomial_days_are_whether_the_unit_converted_that_day(scenario, experiment, compute):
    result = compute(experiment, BOUGHT)
    assert table(result.metrics["bought"].calendar, scenario) == {
        0: (stats_of(1), stats_of(1)),
        1: (stats_of(1, 0), stats_of(1)),
        2: (stats_of(0, 1), None),
        3: (stats_of(1), stats_of(1)),
    }
    assert table(result.metrics["bought"].since_exposure, scenario) == {
        0: (stats_of(1, 1), stats_of(1)),
        1: (stats_of(1), stats_of(1)),
    }


def test_each_metric_keeps_its_own_window_in_one_statement(scenario, experiment, compute):
    """Clicks (24 h window) beside revenue (48 h): Jan 1: c1 2 | t1 1; Jan 2: c1 1 (09:59),
    c2 0 | none (t1's window ended at midnight); Jan 3: c2 0 | none; Jan 4: none (c2's
    window ended Jan 3 20:00) | t2 0. Since exposure: only day 0: c1 3, c2 0 | t1 1."""
    result = compute(experiment, REVENUE, CLICKS)
    assert table(result.metrics["clicks"].calendar, scenario) == {
        0: (stats_of(2), stats_of(1)),
        1: (stats_of(1, 0), None),
        2: (stats_of(0), None),
        3: (None, stats_of(0)),
    }
    assert table(result.metrics["clicks"].since_exposure, scenario) == {
        0: (stats_of(3, 0), stats_of(1)),
    }
    assert table(result.metrics["revenue"].calendar, scenario)[1] == (stats_of(12, 0), stats_of(1))


def test_the_calendar_view_keeps_the_last_days_only(scenario, experiment, compute):
    """With at most 2 days: Jan 3 and Jan 4. c1's window (to Jan 3 10:00) meets Jan 3, so it
    counts there with 0; t1's window ended before: it is in no calendar day. Days since
    exposure are not capped by the calendar."""
    result = compute(experiment, REVENUE, max_days=2)
    assert result.first_day == date(2026, 1, 3) and result.calendar_days == 2
    assert table(result.metrics["revenue"].calendar, scenario) == {
        0: (stats_of(0, 4), None),
        1: (stats_of(6), stats_of(8)),
    }
    assert 1 in result.metrics["revenue"].since_exposure


def test_days_since_exposure_stop_at_the_cap(scenario, experiment, compute):
    result = compute(experiment, REVENUE, max_exposure_days=1)
    assert sorted(result.metrics["revenue"].since_exposure) == [0]
    assert table(result.metrics["revenue"].since_exposure, scenario)[0] == (
        stats_of(15, 4),
        stats_of(20),
    )


def test_per_unit_day_values_are_capped_at_the_snapshot_cap(scenario, experiment, compute):
    """A cap of 9 on revenue: c1's 10 on Jan 1 and 5 + 7 on Jan 2 become 9, t1's 20 too."""
    result = compute(experiment, REVENUE, caps={"revenue": {"value": 9.0}})
    assert table(result.metrics["revenue"].calendar, scenario)[0] == (stats_of(9), stats_of(9))
    assert table(result.metrics["revenue"].calendar, scenario)[1] == (stats_of(9, 0), stats_of(1))


def test_no_exposures_gives_no_days(experiment, compute):
    result = compute(experiment, REVENUE, BOUGHT)
    assert result.metrics["revenue"].calendar == {}
    assert result.metrics["revenue"].since_exposure == {}


def test_calendar_span_is_utc_days_up_to_the_cap():
    assert calendar_span(T0 + timedelta(hours=5), THROUGH) == (T0, 4)
    assert calendar_span(T0, T0 + timedelta(days=100, hours=3)) == (
        T0 + timedelta(days=41),
        60,
    )


# --- random data against a direct computation ---------------------------------------------------


def _reference(exposures, events, metric, through, day0, calendar_days, exposure_days):
    """The rules of analysis/time_aggregation.py's docstring, written out in Python."""
    first, variants = {}, {}
    for unit, variant, ts in exposures:
        if T0 <= ts <= through:
            first[unit] = min(first.get(unit, ts), ts)
            variants.setdefault(unit, set()).add(variant)
    units = {u: (next(iter(v)), first[u]) for u, v in variants.items() if len(v) == 1}
    window = timedelta(hours=metric.window_hours)
    day = timedelta(days=1)
    calendar, since = {}, {}

    def value(unit, lo, hi):
        found = [
            v
            for u, name, ts, v in events
            if u == unit and name == metric.event_name and lo <= ts < hi and ts <= through
        ]
        if metric.kind == "binomial":
            return 1.0 if found else 0.0
        return float(len(found)) if metric.kind == "count" else float(sum(found))

    for unit, (variant, t0) in units.items():
        end = t0 + window
        for c in range(calendar_days):
            lo, hi = day0 + c * day, day0 + (c + 1) * day
            if t0 < hi and end > lo:
                x = value(unit, max(lo, t0), min(hi, end))
                calendar.setdefault(c, {}).setdefault(variant, []).append(x)
        for k in range(min(exposure_days, metric.window_hours // 24)):
            if t0 + (k + 1) * day <= through:
                x = value(unit, t0 + k * day, t0 + (k + 1) * day)
                since.setdefault(k, {}).setdefault(variant, []).append(x)
    return calendar, since


@pytest.mark.parametrize("kind,hours", [("mean", 72), ("count", 30), ("binomial", 48)])
def test_random_data_matches_a_direct_computation(experiment, arms, kind, hours, compute):
    """200 units exposed at random times over 5 days (some twice, some to both arms), events
    at random times around them; the SQL's per-day statistics equal the direct computation."""
    rng = random.Random(hours)
    control, treatment = arms
    p = experiment.project
    exposures, events = [], []
    for i in range(200):
        arm = rng.choice([control, treatment])
        ts = T0 + timedelta(minutes=rng.randrange(-600, 5 * 1440))
        exposures.append((f"u{i}", arm.pk, ts))
        if rng.random() < 0.1:
            other = treatment if arm == control else control
            exposures.append((f"u{i}", rng.choice([arm, other]).pk, ts + timedelta(hours=3)))
        for _ in range(rng.randrange(0, 6)):
            when = ts + timedelta(minutes=rng.randrange(-1440, 5 * 1440))
            events.append((f"u{i}", rng.choice(["purchase", "click"]), when, rng.randint(1, 9)))
    variants = {control.pk: control, treatment.pk: treatment}
    for unit, variant_id, ts in exposures:
        expose(experiment, variants[variant_id], unit, ts)
    for unit, name, ts, value in events:
        event(p, unit, name, ts, value)
    through = T0 + timedelta(days=4, hours=7)
    metric = MetricSpec("m", kind, "purchase", window_hours=hours)
    result = compute(experiment, metric, through=through, max_days=3, max_exposure_days=2)
    day0, calendar_days = calendar_span(T0, through, 3)
    calendar, since = _reference(exposures, events, metric, through, day0, calendar_days, 2)
    for got, want in (
        (result.metrics["m"].calendar, calendar),
        (result.metrics["m"].since_exposure, since),
    ):
        assert sorted(got) == sorted(want)
        for d, by_variant in want.items():
            assert set(got[d]) == set(by_variant)
            for variant_id, values in by_variant.items():
                expected = stats_of(*values)
                actual = got[d][variant_id]
                assert actual.n == expected.n
                assert actual.sum == pytest.approx(expected.sum)
                assert actual.sum_sq == pytest.approx(expected.sum_sq)


def test_ratio_metrics_sum_numerator_and_denominator_per_day(scenario, experiment, compute):
    """Purchase value per click (48 h): Jan 1: c1 10 / 2 clicks | t1 20 / 1 click."""
    ctr = MetricSpec("vpc", "ratio", "purchase", denominator_event="click", window_hours=48)
    day0 = compute(experiment, ctr).metrics["vpc"].calendar[0]
    control, treatment = scenario
    assert day0[control.pk] == SampleStats(
        n=1, sum=10, sum_sq=100, den_sum=2, den_sum_sq=4, sum_prod=20
    )
    assert day0[treatment.pk] == SampleStats(
        n=1, sum=20, sum_sq=400, den_sum=1, den_sum_sq=1, sum_prod=20
    )


# --- the statement ------------------------------------------------------------------------------


def test_bucket_counts_the_bounds_at_or_below_a_value():
    """The nested CASE, evaluated by the database, equals Python's count for every value."""
    bounds = [str(b) for b in (2, 4, 6, 8, 10)]
    with connection.cursor() as cursor:
        for value in range(0, 13):
            for strict in (False, True):
                cursor.execute(f"SELECT {sql.bucket(str(value), bounds, strict)}")
                expected = sum(b < value if strict else b <= value for b in (2, 4, 6, 8, 10))
                assert cursor.fetchone()[0] == expected, (value, strict)


@pytest.mark.parametrize("dialect", [PostgresDialect(connection), SqliteDialect(connection)])
def test_the_statement_binds_every_value(dialect):
    """Names, day starts and caps are parameters; only checked integers are literals."""
    cols = [{"value": sql.DayColumn("m0_v", "sum", 0, 48, "cap0_v")}]
    text = sql.time_views_statement(dialect, [48], cols, 1, 3, 2)
    for param in ("experiment", "project", "since", "through", "day0", "day2", "name0", "cap0_v"):
        assert f"%({param})s" in text
    assert "purchase" not in text


def test_filters_and_value_properties_apply_per_day(experiment, arms, compute):
    """As in the cumulative analysis: only the purchases of plan "pro" count for one metric,
    the "amount" property is the value of the other (an event without it adds nothing).
    c1 (t0 Jan 1 10:00): Jan 1 12:00 10 pro amount 30; Jan 2 09:00 5 free amount 7; Jan 2 11:00
    7 pro without amount. t1 (t0 Jan 1 00:00): Jan 1 00:00 20 pro amount 2.5."""
    from assignments.models import MetricEvent
    from experiments.filters import PropertyFilter

    control, treatment = arms
    p = experiment.project
    expose(experiment, control, "c1", at(1, 10))
    expose(experiment, treatment, "t1", at(1, 0))
    for i, (unit, ts, value, props) in enumerate(
        [
            ("c1", at(1, 12), 10, {"plan": "pro", "amount": 30}),
            ("c1", at(2, 9), 5, {"plan": "free", "amount": 7}),
            ("c1", at(2, 11), 7, {"plan": "pro"}),
            ("t1", at(1, 0), 20, {"plan": "pro", "amount": 2.5}),
        ]
    ):
        MetricEvent.objects.create(
            project=p, event_id=f"prop{i}", name="purchase", unit_id=unit, value=value, ts=ts,
            properties=props,
        )  # fmt: skip
    pro = MetricSpec(
        "pro", "mean", "purchase", window_hours=48, filters=(PropertyFilter("plan", "eq", "pro"),)
    )
    amount = MetricSpec("amount", "mean", "purchase", window_hours=48, value_property="amount")
    result = compute(experiment, pro, amount, REVENUE)
    assert table(result.metrics["pro"].calendar, arms) == {
        0: (stats_of(10), stats_of(20)),
        1: (stats_of(7), stats_of(0)),
        2: (stats_of(0), None),
    }
    assert table(result.metrics["amount"].calendar, arms) == {
        0: (stats_of(30), stats_of(2.5)),
        1: (stats_of(7), stats_of(0)),
        2: (stats_of(0), None),
    }
    assert table(result.metrics["pro"].since_exposure, arms) == {
        0: (stats_of(10), stats_of(20)),
        1: (stats_of(7), stats_of(0)),
    }
    assert table(result.metrics["amount"].since_exposure, arms) == {
        0: (stats_of(37), stats_of(2.5)),
        1: (stats_of(0), stats_of(0)),
    }
    assert table(result.metrics["revenue"].calendar, arms)[1] == (stats_of(12), stats_of(0))
