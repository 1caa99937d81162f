"""The SQL aggregation against hand-computed per-unit values (run on SQLite and PostgreSQL)."""

import random
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from django.db import connection

from analysis import aggregation, unit_columns
from analysis.aggregation import (
    MetricSpec,
    experiment_aggregates,
    exposure_counts,
    metric_aggregates,
)
from analysis.sql.dialects import DIALECTS, Dialect, PostgresDialect, SqliteDialect, dialect_for
from assignments.models import Exposure, MetricEvent
from experiments.models import Experiment
from experiments.services import project_create
from stats import SampleStats, winsor_cap, winsorize
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

# An index scan of ``index`` on ``table``, or of a partition's copy of it (partitioned tables:
# ``<index>_p<project>_w<yyyymmdd>`` on ``<table>_p<project>_w<yyyymmdd>``, or ``_default``).
PARTITION_INDEX = r"Index Only Scan using {0}(_p\d+_\w+)? on {1}"
READ_STRATEGY = aggregation.read_strategy  # the real one, before the fixture below patches it


@pytest.fixture(autouse=True, params=[aggregation.HASH_JOIN, aggregation.INDEX_LOOKUP])
def strategy(request, monkeypatch):
    """Every test runs with each way of reading events (index lookups: PostgreSQL only)."""
    if request.param == aggregation.INDEX_LOOKUP and connection.vendor != "postgresql":
        pytest.skip("index lookups are a PostgreSQL plan")
    monkeypatch.setattr(aggregation, "read_strategy", lambda: request.param)
    return request.param


T0 = datetime(2026, 1, 1, tzinfo=UTC)
THROUGH = T0 + timedelta(hours=48)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def experiment(project, metrics):
    experiment = running_experiment(project)
    Experiment.objects.filter(pk=experiment.pk).update(phase_started_at=T0, started_at=T0)
    experiment.refresh_from_db()
    return experiment


@pytest.fixture
def arms(experiment):
    variants = {v.key: v for v in experiment.variants.all()}
    return variants["control"], variants["treatment"]


def expose(experiment, variant, unit, at, n=[0]):  # noqa: B006 - a counter for event ids
    n[0] += 1
    Exposure.objects.create(
        project=experiment.project,
        event_id=f"x{n[0]}",
        experiment=experiment,
        variant=variant,
        unit_id=unit,
        ts=at,
    )


def event(project, unit, name, at, value=1.0, n=[0]):  # noqa: B006
    n[0] += 1
    MetricEvent.objects.create(
        project=project, event_id=f"e{n[0]}", name=name, unit_id=unit, value=value, ts=at
    )


def aggregate(experiment, *metrics, through=THROUGH):
    return metric_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=list(metrics),
        since=T0,
        through=through,
    )


@pytest.fixture
def scenario(experiment, arms):
    """Six units; the per-unit values each metric should see are in the tests below."""
    control, treatment = arms
    p = experiment.project
    # u1 (control): exposed at +1h and again at +5h (same variant: still one unit).
    expose(experiment, control, "u1", h(1))
    expose(experiment, control, "u1", h(5))
    event(p, "u1", "purchase", h(3), 10)  # in the window [+1h, +25h)
    event(p, "u1", "purchase", h(30), 5)  # after the window: ignored
    event(p, "u1", "purchase", h(-2), 7)  # before exposure: the CUPED covariate
    event(p, "u1", "purchase", h(-30), 100)  # before the pre-exposure window: ignored
    event(p, "u1", "click", h(2))
    event(p, "u1", "view", h(1.5))
    event(p, "u1", "view", h(2.5))
    # u2 (control): no events in any window; one after the cut-off.
    expose(experiment, control, "u2", h(2))
    event(p, "u2", "purchase", THROUGH + timedelta(seconds=1), 50)
    # u3 (treatment): an event exactly at exposure counts, one exactly at the window end not.
    expose(experiment, treatment, "u3", h(1))
    event(p, "u3", "purchase", h(1), 20)
    event(p, "u3", "purchase", h(25), 4)
    event(p, "u3", "click", h(4))
    event(p, "u3", "click", h(5))
    event(p, "u3", "view", h(4))
    # u4: exposed to both variants: excluded from every metric.
    expose(experiment, control, "u4", h(1))
    expose(experiment, treatment, "u4", h(2))
    event(p, "u4", "purchase", h(3), 1000)
    # u5 (treatment): an exposure before the phase (ignored), then its first one at +3h.
    expose(experiment, treatment, "u5", h(-1))
    expose(experiment, treatment, "u5", h(3))
    event(p, "u5", "purchase", h(2), 8)  # before its first in-phase exposure: covariate
    event(p, "u5", "purchase", h(4), 1)
    # u6 (control): exposed after the cut-off: not in this snapshot.
    expose(experiment, control, "u6", THROUGH + timedelta(hours=1))
    event(p, "u6", "purchase", THROUGH + timedelta(hours=2), 9)
    # Another project's events for the same unit ids never count.
    other = project_create(slug="other", name="Other")
    event(other, "u1", "purchase", h(3), 999)
    return control, treatment


def stats_of(values, covariates=None, denominators=None):
    """The sufficient statistics of per-unit values, computed directly in numpy."""
    v = np.asarray(values, float)
    out = {"n": len(v), "sum": v.sum(), "sum_sq": (v * v).sum()}
    if denominators is not None:
        d = np.asarray(denominators, float)
        out.update(den_sum=d.sum(), den_sum_sq=(d * d).sum(), sum_prod=(v * d).sum())
    if covariates is not None:
        c = np.asarray(covariates, float)
        out.update(cov_sum=c.sum(), cov_sum_sq=(c * c).sum(), cov_sum_prod=(v * c).sum())
    return SampleStats(**{k: float(x) if k != "n" else int(x) for k, x in out.items()})


def assert_stats(actual: SampleStats, expected: SampleStats) -> None:
    for name in expected.__dataclass_fields__:
        assert getattr(actual, name) == pytest.approx(getattr(expected, name)), name


def test_units_multi_exposure_and_cutoff_are_counted(scenario, experiment):
    """u1..u5 are in the window; u4 saw both variants (excluded, counted); u6 is after it."""
    control, treatment = scenario
    counts = exposure_counts(experiment.pk, T0, THROUGH)
    assert counts.units_by_variant == {control.pk: 2, treatment.pk: 2}
    assert counts.multi_variant_units == 1
    assert counts.assignment_mismatch == 0


def test_the_metrics_statement_returns_the_same_counts(scenario, experiment):
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=24)
    result = experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=[spec],
        since=T0,
        through=THROUGH,
    )
    assert result.counts == exposure_counts(experiment.pk, T0, THROUGH)
    assert {v: s.n for v, s in result.metrics["revenue"].stats.items()} == (
        result.counts.units_by_variant
    )


def test_an_exposure_against_the_assignment_excludes_the_unit(scenario, experiment):
    """Ingestion flags an exposure naming another variant than the stored assignment: that unit
    has seen two variants even with one exposure row, so it is left out like u4."""
    control, treatment = scenario
    Exposure.objects.filter(unit_id="u3").update(assignment_mismatch=True)
    counts = exposure_counts(experiment.pk, T0, THROUGH)
    assert counts.units_by_variant == {control.pk: 2, treatment.pk: 1}
    assert (
        counts
        == experiment_aggregates(
            experiment_id=experiment.pk,
            project_id=experiment.project_id,
            metrics=[MetricSpec("m", "count", "purchase")],
            since=T0,
            through=THROUGH,
        ).counts
    )
    assert counts.multi_variant_units == 2 and counts.assignment_mismatch == 1
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=24)
    stats = aggregate(experiment, spec)["revenue"].stats[treatment.pk]
    assert_stats(stats, stats_of([1], covariates=[8]))


def test_binomial_conversion_window_and_covariate(scenario, experiment):
    control, treatment = scenario
    spec = MetricSpec("purchase", "binomial", "purchase", window_hours=24)
    result = aggregate(experiment, spec)["purchase"]
    # control: u1 converted in its window and before exposure; u2 never.
    assert_stats(result.stats[control.pk], stats_of([1, 0], covariates=[1, 0]))
    # treatment: u3 at exposure time (the window end is exclusive); u5 before and after.
    assert_stats(result.stats[treatment.pk], stats_of([1, 1], covariates=[0, 1]))
    assert result.caps == {}


def test_mean_sums_values_inside_the_window_only(scenario, experiment):
    control, treatment = scenario
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=24)
    result = aggregate(experiment, spec)["revenue"]
    assert_stats(result.stats[control.pk], stats_of([10, 0], covariates=[7, 0]))
    assert_stats(result.stats[treatment.pk], stats_of([20, 1], covariates=[0, 8]))


def test_count_and_ratio(scenario, experiment):
    control, treatment = scenario
    clicks = MetricSpec("clicks", "count", "click", window_hours=24, cuped=False)
    ctr = MetricSpec("ctr", "ratio", "click", denominator_event="view", window_hours=24)
    result = aggregate(experiment, clicks, ctr)
    assert_stats(result["clicks"].stats[control.pk], stats_of([1, 0]))
    assert_stats(result["clicks"].stats[treatment.pk], stats_of([2, 0]))
    assert_stats(result["ctr"].stats[control.pk], stats_of([1, 0], denominators=[2, 0]))
    assert_stats(result["ctr"].stats[treatment.pk], stats_of([2, 0], denominators=[1, 0]))


def test_metrics_with_different_windows_share_one_statement(scenario, experiment):
    """Each metric keeps its own window when several are computed together."""
    short = MetricSpec("short", "mean", "purchase", window_hours=1)
    wide = MetricSpec("wide", "mean", "purchase", window_hours=48)
    clicks = MetricSpec("clicks", "count", "click", window_hours=2, cuped=False)
    together = aggregate(experiment, short, wide, clicks)
    for spec in (short, wide, clicks):
        assert together[spec.key].stats == aggregate(experiment, spec)[spec.key].stats
    control, treatment = scenario
    # u1: 10 at +2h of its +1h exposure is outside a 1-hour window; 5 at +30h inside 48 hours.
    assert_stats(together["short"].stats[control.pk], stats_of([0, 0], covariates=[0, 0]))
    assert_stats(together["wide"].stats[control.pk], stats_of([15, 0], covariates=[107, 0]))
    assert_stats(together["clicks"].stats[control.pk], stats_of([1, 0]))


def test_winsorization_caps_each_column_at_its_pooled_quantile(scenario, experiment):
    """Values (10, 0 | 20, 1) cap at their 0.75-quantile 12.5; covariates (7, 0 | 0, 8) at 7.25."""
    control, treatment = scenario
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=24, winsorize_quantile=0.75)
    result = aggregate(experiment, spec)["revenue"]
    # Hand computation: sorted 0, 1, 10, 20; position 3 * 0.75 = 2.25 -> 10 + 0.25 * 10 = 12.5.
    assert result.caps["value"] == pytest.approx(12.5)
    assert result.caps["covariate"] == pytest.approx(7.25)
    assert result.caps["value"] == pytest.approx(winsor_cap([10, 0, 20, 1], 0.75))
    assert_stats(result.stats[control.pk], stats_of([10, 0], covariates=[7, 0]))
    assert_stats(result.stats[treatment.pk], stats_of([12.5, 1], covariates=[0, 7.25]))


def test_binomial_metrics_are_never_winsorized(scenario, experiment):
    control, _ = scenario
    spec = MetricSpec("purchase", "binomial", "purchase", window_hours=24, winsorize_quantile=0.6)
    result = aggregate(experiment, spec)["purchase"]
    assert result.caps == {}
    assert result.stats[control.pk].sum == 1


def test_late_events_count_by_their_timestamp(scenario, experiment):
    """An event stored after a first aggregation but stamped inside the cut-off is counted
    next time; one stamped after the cut-off is not, until a later cut-off covers it."""
    control, _ = scenario
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=72, cuped=False)
    first = aggregate(experiment, spec)["revenue"].stats[control.pk]
    event(experiment.project, "u2", "purchase", h(10), 3)  # arrives late, stamped early
    again = aggregate(experiment, spec)["revenue"].stats[control.pk]
    assert again.sum == first.sum + 3
    later = aggregate(experiment, spec, through=THROUGH + timedelta(hours=1))["revenue"]
    assert later.stats[control.pk].sum == again.sum + 50  # u2's event 1 s after the old cut-off


def test_no_exposures_gives_no_rows(experiment):
    spec = MetricSpec("purchase", "binomial", "purchase")
    assert aggregate(experiment, spec)["purchase"].stats == {}
    assert exposure_counts(experiment.pk, T0, THROUGH).units == 0


def _reference(exposures, events, metric: MetricSpec, through):
    """A direct Python implementation of the module docstring's rules."""
    first: dict[str, tuple[datetime, set]] = {}
    for unit, variant, ts in exposures:
        if not T0 <= ts <= through:
            continue
        t, seen = first.get(unit, (ts, set()))
        first[unit] = (min(t, ts), seen | {variant})
    units = {u: (t, next(iter(vs))) for u, (t, vs) in first.items() if len(vs) == 1}
    window = timedelta(hours=metric.window_hours)

    def per_unit(unit, t0, name, pre, kind):
        lo, hi = (t0 - window, t0) if pre else (t0, t0 + window)
        vals = [v for u, n, v, ts in events if u == unit and n == name and lo <= ts < hi]
        if kind == "binomial":
            return float(bool(vals))
        if kind == "count":
            return float(len(vals))
        return float(sum(vals))

    def in_cutoff(rows):
        return [r for r in rows if r[3] <= through]

    events = in_cutoff(events)
    names = sorted(units)
    v = np.array([per_unit(u, units[u][0], metric.event_name, False, metric.kind) for u in names])
    c = np.array([per_unit(u, units[u][0], metric.event_name, True, metric.kind) for u in names])
    q = metric.winsorize_quantile
    if q is not None and metric.kind != "binomial" and len(v):
        v, c = winsorize(v, q), winsorize(c, q)
    out = {}
    for variant in {vv for _, vv in units.values()}:
        mask = np.array([units[u][1] == variant for u in names])
        out[variant] = stats_of(v[mask], covariates=c[mask])
    return out


@pytest.mark.parametrize("kind,q", [("mean", 0.9), ("count", None), ("binomial", None)])
def test_random_data_matches_a_direct_computation(experiment, arms, kind, q):
    """200 units with random exposures and events around them, against `_reference`."""
    rng = random.Random(7)
    exposures, events = [], []
    for i in range(200):
        unit = f"r{i}"
        variant = rng.choice(arms)
        for _ in range(rng.choice([1, 1, 2])):
            other = rng.choice(arms) if rng.random() < 0.05 else variant
            ts = h(rng.uniform(-5, 50))
            exposures.append((unit, other.pk, ts))
            expose(experiment, other, unit, ts)
        for _ in range(rng.randint(0, 6)):
            ts = h(rng.uniform(-30, 60))
            value = round(rng.expovariate(0.1), 3)
            events.append((unit, "purchase", value, ts))
            event(experiment.project, unit, "purchase", ts, value)
    spec = MetricSpec("m", kind, "purchase", window_hours=12, winsorize_quantile=q)
    result = aggregate(experiment, spec)["m"]
    expected = _reference(exposures, events, spec, THROUGH)
    assert set(result.stats) == set(expected)
    for variant, stats in expected.items():
        assert_stats(result.stats[variant], stats)


def test_the_read_strategy_follows_the_schema(strategy):
    """Index lookups need PostgreSQL and an index holding (project_id, unit_id, ts, name,
    value): the migrations create one (metricevent_unit_ts), so PostgreSQL uses it and falls
    back to the hash join without it; SQLite always joins."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    if connection.vendor != "postgresql":
        assert READ_STRATEGY() == aggregation.HASH_JOIN
        return
    assert READ_STRATEGY() == aggregation.INDEX_LOOKUP
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX metricevent_unit_ts")
    assert READ_STRATEGY() == aggregation.HASH_JOIN


# --- bad stored data ---------------------------------------------------------------------------


def _aggregates(experiment, *metrics):
    return experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=list(metrics),
        since=T0,
        through=THROUGH,
    )


@pytest.fixture
def poisoned(experiment, arms):
    """A 1e308 purchase value stored directly (before ingestion bounded values): its square
    overflows float8 (PostgreSQL raises; SQLite's sums become inf)."""
    control, treatment = arms
    p = experiment.project
    expose(experiment, control, "u1", h(1))
    expose(experiment, treatment, "u2", h(1))
    event(p, "u1", "purchase", h(2), 1e308)
    event(p, "u2", "purchase", h(2), 5)
    event(p, "u2", "click", h(3))
    event(p, "u2", "click", h(4))
    return arms


def test_an_overflowing_metric_gets_an_error_and_the_healthy_ones_their_statistics(
    poisoned, experiment
):
    control, treatment = poisoned
    result = _aggregates(
        experiment,
        MetricSpec("revenue", "mean", "purchase"),
        MetricSpec("clicks", "count", "click"),
        MetricSpec("bought", "binomial", "purchase"),
    )
    assert result.errors == {"revenue": aggregation.OVERFLOW_REASON}
    assert "docs/operations.md" in result.errors["revenue"]
    assert set(result.metrics) == {"clicks", "bought"}
    assert_stats(result.metrics["clicks"].stats[treatment.pk], stats_of([2], covariates=[0]))
    assert_stats(result.metrics["bought"].stats[control.pk], stats_of([1], covariates=[0]))
    assert result.counts.units_by_variant == {control.pk: 1, treatment.pk: 1}
    # The caller's transaction is still usable (a savepoint took the failure on PostgreSQL).
    assert Exposure.objects.count() == 2


def test_when_every_metric_fails_the_exposure_counts_still_come_back(poisoned, experiment):
    control, treatment = poisoned
    result = _aggregates(
        experiment,
        MetricSpec("revenue", "mean", "purchase"),
        MetricSpec("revenue-ratio", "ratio", "purchase", denominator_event="click"),
    )
    assert result.metrics == {}
    assert set(result.errors) == {"revenue", "revenue-ratio"}
    assert result.counts == exposure_counts(experiment.pk, T0, THROUGH)
    assert result.counts.units_by_variant == {control.pk: 1, treatment.pk: 1}


def test_a_metric_whose_sql_fails_gets_the_database_error_as_its_reason(
    scenario, experiment, monkeypatch
):
    real = aggregation.metrics_sql

    def broken_for_one(metrics, *args, **kwargs):
        if any(m.key == "broken" for m in metrics):
            return "SELECT no_such_function_abacus(1)"
        return real(metrics, *args, **kwargs)

    monkeypatch.setattr(aggregation, "metrics_sql", broken_for_one)
    result = _aggregates(
        experiment, MetricSpec("broken", "count", "click"), MetricSpec("n", "count", "click")
    )
    assert set(result.metrics) == {"n"} and set(result.errors) == {"broken"}
    assert result.errors["broken"].startswith("the aggregation failed (")
    assert "no_such_function_abacus" in result.errors["broken"]


def test_the_longest_allowed_conversion_window_aggregates(experiment, arms):
    """A metric may look up to MAX_CONVERSION_WINDOW_HOURS (a year) after exposure, and as far
    before it for the covariate; the timestamp arithmetic stays in range on both databases."""
    from experiments.services import MAX_CONVERSION_WINDOW_HOURS

    control, _ = arms
    p = experiment.project
    expose(experiment, control, "u1", h(1))
    event(p, "u1", "purchase", h(1 - MAX_CONVERSION_WINDOW_HOURS + 1), 3)  # covariate
    event(p, "u1", "purchase", h(1 - MAX_CONVERSION_WINDOW_HOURS - 1), 100)  # too early
    event(p, "u1", "purchase", h(2), 4)
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=MAX_CONVERSION_WINDOW_HOURS)
    result = _aggregates(experiment, spec)
    assert result.errors == {}
    assert_stats(result.metrics["revenue"].stats[control.pk], stats_of([4], covariates=[3]))


# --- the dialect seam ---------------------------------------------------------------------------


class ThirdDialect(Dialect):
    """A third engine written the way the seam intends: one class, no builder touched (the
    spellings are ClickHouse's; quantileExactInclusive is Hyndman-Fan 7 too)."""

    vendor = "third"

    def instant(self, column):
        return f"toUnixTimestamp64Micro({column})"

    def shift(self, instant, hours):
        return f"({instant} + {int(hours) * 3_600_000_000})"

    def double(self, expr):
        return f"toFloat64({expr})"

    def count_if(self, condition):
        return f"countIf({condition})"

    def sum_if(self, expr, condition):
        return f"sumIf({expr}, {condition})"

    def least(self, a, b):
        return f"least({a}, {b})"

    def quantiles(self, columns, source, where):
        parts = [f"quantileExactInclusive({q!r})({name}) AS cap_{name}" for name, q in columns]
        return f"SELECT {', '.join(parts)} FROM {source} WHERE {where}"

    def fence(self):
        return ""

    def materialized(self):
        return ""


# Every kind, a ratio, CUPED on and off, caps on some columns, three windows, three event names.
SEAM_METRICS = [
    MetricSpec("short", "mean", "purchase", window_hours=1, winsorize_quantile=0.75),
    MetricSpec("clicks", "count", "click", window_hours=2, cuped=False),
    MetricSpec(
        "ctr", "ratio", "click", denominator_event="view", window_hours=48, winsorize_quantile=0.99
    ),
    MetricSpec("bought", "binomial", "purchase", window_hours=24, winsorize_quantile=0.5),
]


def render(dialect, strategy=aggregation.HASH_JOIN, metrics=SEAM_METRICS):
    names = unit_columns.event_names(metrics)
    codes = {name: i for i, name in enumerate(names)}
    columns = [unit_columns.metric_columns(i, m, codes) for i, m in enumerate(metrics)]
    return aggregation.metrics_sql(metrics, columns, names, strategy, dialect=dialect)


def marked(dialect):
    """The same dialect, with each SQL hook's output between ⟦ and ⟧."""

    def mark(real):
        return lambda self, *args, **kwargs: f"⟦{real(self, *args, **kwargs)}⟧"

    hooks = {hook: mark(getattr(type(dialect), hook)) for hook in Dialect.SQL_HOOKS}
    copy = object.__new__(type(f"Marked{type(dialect).__name__}", (type(dialect),), hooks))
    copy.__dict__.update(dialect.__dict__)
    return copy


def skeleton(sql: str) -> str:
    """The statement with each outermost dialect fragment replaced by ⟦⟧."""
    out, depth = [], 0
    for char in sql:
        depth += char == "⟦"
        if depth == 0:
            out.append(char)
        depth -= char == "⟧"
        if char == "⟧" and depth == 0:
            out.append("⟦⟧")
    assert depth == 0
    return "".join(out)


DIALECT_CASES = [
    (PostgresDialect(connection), aggregation.HASH_JOIN),
    (PostgresDialect(connection), aggregation.INDEX_LOOKUP),
    (SqliteDialect(connection, version=(3, 45, 0)), aggregation.HASH_JOIN),
    (SqliteDialect(connection, version=(3, 31, 0)), aggregation.HASH_JOIN),  # no MATERIALIZED
    (ThirdDialect(), aggregation.HASH_JOIN),
]


def test_the_dialect_is_the_only_thing_that_differs_between_engines(strategy):
    """Rendered with each dialect (whatever the test database), the statements differ, and
    only inside the dialect's fragments: with those masked, every engine's statement is the
    same text. Marking the fragments changes nothing else."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    skeletons = {}
    for dialect, read in DIALECT_CASES:
        plain, tagged = render(dialect, read), render(marked(dialect), read)
        assert tagged.replace("⟦", "").replace("⟧", "") == plain
        skeletons.setdefault(read, set()).add(skeleton(tagged))
    assert {read: len(texts) for read, texts in skeletons.items()} == {
        aggregation.HASH_JOIN: 1,
        aggregation.INDEX_LOOKUP: 1,
    }
    hash_join = [render(d) for d, read in DIALECT_CASES if read == aggregation.HASH_JOIN]
    assert len(set(hash_join)) == len(hash_join)  # and each dialect does render its own SQL


def test_a_third_dialect_renders_without_touching_the_builders(monkeypatch, strategy):
    """Adding an engine is one Dialect subclass registered by its Django vendor name: no
    PostgreSQL or SQLite spelling leaks into its statement, and the parameters stay bound."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    monkeypatch.setitem(DIALECTS, "third", ThirdDialect)
    third = dialect_for(SimpleNamespace(vendor="third", alias="default"))
    assert isinstance(third, ThirdDialect)
    sql = render(third)
    for spelling in (
        "countIf(",
        "sumIf(",
        "toFloat64(",
        "quantileExactInclusive(0.75)(m0_v)",
        "least(p.m0_v",
        "toUnixTimestamp64Micro(e.ts)",
    ):
        assert spelling in sql
    for other in (
        "INTERVAL",
        "strftime",
        "percentile_cont",
        "ROW_NUMBER",
        "FILTER",
        "LEAST(",
        "MIN(p.",
        "DOUBLE PRECISION",
        "MATERIALIZED",
        "OFFSET",
    ):
        assert other not in sql, other
    for param in ("experiment", "project", "since", "through", "earliest", "name0", "name2"):
        assert f"%({param})s" in sql
    assert "'purchase'" not in sql and "'view'" not in sql
    with pytest.raises(NotImplementedError, match="no SQL dialect for 'fourth'"):
        dialect_for(SimpleNamespace(vendor="fourth"))


def test_the_connection_picks_its_dialect(strategy):
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    expected = {"postgresql": PostgresDialect, "sqlite": SqliteDialect}[connection.vendor]
    assert type(aggregation.current_dialect()) is expected
    postgresql = connection.vendor == "postgresql"
    assert aggregation.current_dialect().supports_index_lookup == postgresql


def _plan(experiment, metrics, strategy):
    """PostgreSQL's plan of the metrics statement (as the text of EXPLAIN), sequential and bitmap
    scans off: with them off the planner picks an index-only scan exactly when the index holds
    every column the statement reads. Left on, bitmap against index-only depends on the table's
    visibility map, which earlier tests' rolled-back rows leave empty (CI's order chose bitmap)."""
    names = unit_columns.event_names(metrics)
    d = aggregation.current_dialect()
    params = {
        "experiment": experiment.pk,
        "project": experiment.project_id,
        "since": T0,
        "through": THROUGH,
        "earliest": T0 - timedelta(hours=max(m.window_hours for m in metrics)),
        **{f"name{i}": name for i, name in enumerate(names)},
    }
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE assignments_metricevent")
        cursor.execute("ANALYZE assignments_exposure")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + render(d, strategy, metrics), params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize("specs", [SEAM_METRICS, SEAM_METRICS[1:2]], ids=["four", "one"])
def test_postgres_reads_the_events_through_the_covering_index(
    scenario, experiment, strategy, specs
):
    """The statement's predicates and columns fit the indexes: events come from an index-only
    scan of metricevent_unit_ts (it holds name and value), exposures from exposure_exp_unit_ts.
    Sequential and bitmap scans are switched off for the plan: on a few rows they are the
    cheapest, at scale they are not (docs/benchmarks.md). On the partitioned tables each
    partition's copy of the index is named <index>_p<project>_<week or default>."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL plans")
    plan = _plan(experiment, specs, strategy)
    assert re.search(PARTITION_INDEX.format("metricevent_unit_ts", "assignments_metricevent"), plan)
    assert "exposure_exp_unit_ts" in plan, plan  # an index or index-only scan
    assert "Seq Scan" not in plan, plan
