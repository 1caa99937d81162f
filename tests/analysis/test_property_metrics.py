"""Metrics from event properties in the SQL aggregation: filters and value properties against
hand-computed per-unit values, on SQLite and PostgreSQL, with both ways of reading events."""

# The fixtures imported below are pytest's, requested by name as arguments.
# ruff: noqa: F811

import re
from datetime import timedelta

import pytest
from django.db import connection

from analysis import aggregation, unit_columns
from analysis.aggregation import MetricSpec, experiment_aggregates
from analysis.sql.dialects import PostgresDialect, SqliteDialect
from assignments.models import MetricEvent
from experiments.filters import clean_filters

# The experiment, its arms, its clock and both ways of reading events (the autouse
# ``strategy``), as the plain aggregation's tests have them.
from tests.analysis.test_aggregation import (  # noqa: F401
    T0,
    THROUGH,
    arms,
    experiment,
    expose,
    h,
    marked,
    skeleton,
    strategy,
)

pytestmark = pytest.mark.django_db


def buy(project, unit, at, properties=None, value=1.0, name="purchase", n=[0]):  # noqa: B006
    n[0] += 1
    MetricEvent.objects.create(
        project=project,
        event_id=f"e{n[0]}",
        name=name,
        unit_id=unit,
        value=value,
        ts=at,
        properties=properties,
    )


@pytest.fixture
def scenario(experiment, arms):
    """Five units exposed at +1h; the per-unit values each filter should see are in the tests.

    control: u1, u2, u3; treatment: u4, u5 (no events). Purchases inside the 24-hour window
    unless said otherwise."""
    control, treatment = arms
    p = experiment.project
    for unit, arm in (("u1", control), ("u2", control), ("u3", control)):
        expose(experiment, arm, unit, h(1))
    for unit in ("u4", "u5"):
        expose(experiment, treatment, unit, h(1))
    buy(p, "u1", h(2), {"plan": "pro", "amount": 10, "tags": ["sale", "new"], "coupon": True})
    buy(p, "u1", h(3), {"plan": "free", "amount": 3.5})
    buy(p, "u1", h(-2), {"plan": "pro", "amount": 4})  # before exposure: the covariate
    buy(p, "u2", h(2), {"plan": "pro", "amount": "n/a"})  # a non-numeric amount
    buy(p, "u2", h(4))  # no properties at all
    buy(p, "u3", h(2), {"plan": 3, "amount": 5, "coupon": False})  # plan: a number
    buy(p, "u3", h(5), {"plan": "Pro", "note": "a pro user", "tags": "sale"})
    buy(p, "u3", h(30), {"plan": "pro", "amount": 100})  # after the window: never counts
    buy(p, "u4", h(2), {"plan": "team", "amount": 7.5, "items": 2})
    buy(p, "u4", h(6), {"plan": "pro", "amount": -2, "items": 2.5, "nested": {"plan": "pro"}})
    buy(p, "u4", h(7), {"plan": "pro", "amount": 1}, name="refund")  # another event name
    return control, treatment


def spec(key, kind="count", filters=(), value_property="", **kwargs):
    kwargs.setdefault("window_hours", 24)
    kwargs.setdefault("cuped", False)
    return MetricSpec(
        key,
        kind,
        kwargs.pop("event_name", "purchase"),
        filters=tuple(clean_filters(list(filters))),
        value_property=value_property,
        **kwargs,
    )


def f(prop, op, value):
    return {"property": prop, "op": op, "value": value}


def aggregates(experiment, *metrics):
    result = experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=list(metrics),
        since=T0,
        through=THROUGH,
    )
    assert result.errors == {}
    return result.metrics


def values_of(aggregate, arms, control_values, treatment_values):
    """The aggregate equals the sufficient statistics of these per-unit values."""
    control, treatment = arms
    for variant, values in ((control, control_values), (treatment, treatment_values)):
        stats = aggregate.stats[variant.pk]
        assert stats.n == len(values)
        assert stats.sum == pytest.approx(sum(values))
        assert stats.sum_sq == pytest.approx(sum(v * v for v in values))


# Each case: the filters, then the per-unit counts of matching purchases in the window,
# (u1, u2, u3) and (u4, u5), computed by hand from the scenario.
COUNT_CASES = {
    "eq text": ([f("plan", "eq", "pro")], (1, 1, 0), (1, 0)),
    "eq is case-sensitive and typed": ([f("plan", "eq", "Pro")], (0, 0, 1), (0, 0)),
    "eq number matches 3 as 3.0": ([f("plan", "eq", 3.0)], (0, 0, 1), (0, 0)),
    "eq number is not the string": ([f("plan", "eq", "3")], (0, 0, 0), (0, 0)),
    "eq boolean": ([f("coupon", "eq", True)], (1, 0, 0), (0, 0)),
    "eq false is not missing": ([f("coupon", "eq", False)], (0, 0, 1), (0, 0)),
    # neq is the complement of eq: events without the property (u2's second) match.
    "neq": ([f("plan", "neq", "pro")], (1, 1, 2), (1, 0)),
    "in mixes types": ([f("plan", "in", ["team", 3, "free"])], (1, 0, 1), (1, 0)),
    "gt skips non-numbers": ([f("amount", "gt", 4)], (1, 0, 1), (1, 0)),
    "gte includes the bound": ([f("amount", "gte", 5)], (1, 0, 1), (1, 0)),
    "lt": ([f("amount", "lt", 4)], (1, 0, 0), (1, 0)),
    "lte with a negative": ([f("amount", "lte", -2)], (0, 0, 0), (1, 0)),
    "numbers compare as numbers": ([f("items", "gt", 2)], (0, 0, 0), (1, 0)),
    "contains in a string": ([f("note", "contains", "pro")], (0, 0, 1), (0, 0)),
    "contains an element of a list": ([f("tags", "contains", "sale")], (1, 0, 1), (0, 0)),
    "contains is no substring of elements": ([f("tags", "contains", "sal")], (0, 0, 1), (0, 0)),
    "nested objects are not top-level properties": ([f("nested", "eq", "pro")], (0, 0, 0), (0, 0)),
    "all filters must match": (
        [f("plan", "in", ["pro", "team"]), f("amount", "gte", 0)],
        (1, 0, 0),
        (1, 0),
    ),
    "a missing property matches nothing but neq": ([f("color", "eq", "red")], (0, 0, 0), (0, 0)),
}


@pytest.mark.parametrize("case", COUNT_CASES, ids=list(COUNT_CASES))
def test_each_operator_counts_the_events_it_matches(scenario, experiment, case):
    filters, control, treatment = COUNT_CASES[case]
    result = aggregates(experiment, spec("m", "count", filters))["m"]
    values_of(result, scenario, list(control), list(treatment))


def test_a_binomial_metric_converts_on_a_matching_event_only(scenario, experiment):
    result = aggregates(experiment, spec("m", "binomial", [f("amount", "gt", 4)]))["m"]
    values_of(result, scenario, [1, 0, 1], [1, 0])


def test_value_property_sums_numbers_and_skips_missing_or_non_numeric(scenario, experiment):
    """u1: 10 + 3.5; u2: "n/a" and no properties add nothing; u3: 5 (its second purchase has
    no amount); u4: 7.5 - 2 (its refund is another event)."""
    result = aggregates(experiment, spec("m", "mean", value_property="amount"))["m"]
    values_of(result, scenario, [13.5, 0, 5], [5.5, 0])


def test_filters_and_value_property_together(scenario, experiment):
    filters = [f("plan", "in", ["pro", "team"])]
    result = aggregates(experiment, spec("m", "mean", filters, "amount"))["m"]
    values_of(result, scenario, [10, 0, 0], [5.5, 0])


def test_filtered_and_plain_metrics_share_one_statement(scenario, experiment):
    """Several metrics on the same event, filtered or not, each keep their own rules when
    computed together (in one statement) and equal what each gives alone."""
    specs = [
        spec("all", "count"),
        spec("pro", "count", [f("plan", "eq", "pro")]),
        spec("revenue", "mean"),
        spec("amount", "mean", value_property="amount"),
        spec("pro-amount", "mean", [f("plan", "eq", "pro")], "amount"),
        spec("refunds", "count", [f("plan", "eq", "pro")], event_name="refund"),
    ]
    together = aggregates(experiment, *specs)
    for one in specs:
        assert together[one.key].stats == aggregates(experiment, one)[one.key].stats, one.key
    values_of(together["all"], scenario, [2, 2, 2], [2, 0])
    values_of(together["pro"], scenario, [1, 1, 0], [1, 0])
    values_of(together["revenue"], scenario, [2, 2, 2], [2, 0])  # event values (1 each)
    values_of(together["amount"], scenario, [13.5, 0, 5], [5.5, 0])
    values_of(together["pro-amount"], scenario, [10, 0, 0], [-2, 0])
    values_of(together["refunds"], scenario, [0, 0, 0], [1, 0])


def test_the_covariate_uses_the_same_filters_and_value(scenario, experiment):
    """u1's purchase 2 hours before exposure (pro, amount 4) is its pre-exposure value."""
    cuped = spec("m", "mean", [f("plan", "eq", "pro")], "amount", cuped=True)
    result = aggregates(experiment, cuped)["m"]
    control, treatment = scenario
    assert result.stats[control.pk].cov_sum == 4
    assert result.stats[control.pk].cov_sum_prod == 40
    assert result.stats[treatment.pk].cov_sum == 0


def test_a_ratio_filters_its_numerator_only(scenario, experiment):
    """Numerator: pro purchases; denominator: all purchases (filters never apply to it)."""
    ratio = spec("m", "ratio", [f("plan", "eq", "pro")], denominator_event="purchase")
    result = aggregates(experiment, ratio)["m"]
    control, treatment = scenario
    c, t = result.stats[control.pk], result.stats[treatment.pk]
    assert (c.sum, c.den_sum, c.sum_prod) == (2, 6, 1 * 2 + 1 * 2)
    assert (t.sum, t.den_sum) == (1, 2)


def test_a_filter_value_is_data_never_sql(scenario, experiment):
    """A hostile value is compared as a string: it matches the event holding exactly it, and
    the tables are intact."""
    hostile = "x'); DROP TABLE assignments_metricevent; --"
    buy(experiment.project, "u5", h(2), {"plan": hostile})
    result = aggregates(experiment, spec("m", "count", [f("plan", "eq", hostile)]))["m"]
    values_of(result, scenario, [0, 0, 0], [0, 1])
    result = aggregates(experiment, spec("m", "count", [f("note", "contains", "%")]))["m"]
    values_of(result, scenario, [0, 0, 0], [0, 0])  # no LIKE wildcard either
    assert MetricEvent.objects.filter(unit_id="u5").count() == 1


def test_events_with_large_properties_count_too(experiment, arms, strategy):
    """Properties too large for the covering index on PostgreSQL are read from the table."""
    control, treatment = arms
    expose(experiment, control, "u1", h(1))
    expose(experiment, treatment, "u2", h(1))
    big = {"plan": "pro", "amount": 2, "blob": "x" * 3000}
    buy(experiment.project, "u1", h(2), big)
    buy(experiment.project, "u2", h(2), {"plan": "pro", "amount": 3})
    result = aggregates(experiment, spec("m", "mean", [f("plan", "eq", "pro")], "amount"))["m"]
    values_of(result, arms, [2], [3])


def test_numbers_compare_alike_on_both_databases(experiment, arms):
    """Integers, decimals and exponents compare as doubles: 0.1 + 0.2 is above 0.3, 1e3 equals
    1000, and a large integer equals its float."""
    control, _ = arms
    expose(experiment, control, "u1", h(1))
    for x in (0.1 + 0.2, 1e3, 2**40, -0.0):
        buy(experiment.project, "u1", h(2), {"x": x})
    cases = [
        ("gt", 0.3, 3),
        ("eq", 1000, 1),
        ("eq", float(2**40), 1),
        ("eq", 0, 1),
        ("lte", 0.30000000000000004, 2),
        ("in", [1000.0, 0.0], 2),
    ]
    for op, value, expected in cases:
        result = aggregates(experiment, spec("m", "count", [f("x", op, value)]))["m"]
        assert result.stats[control.pk].sum == expected, (op, value)


# --- the SQL ------------------------------------------------------------------------------------

FILTERED = [
    spec("plain", "mean"),
    spec("pro", "binomial", [f("plan", "in", ["pro", 3, True]), f("amount", "gte", 2)]),
    spec("amount", "mean", [f("tags", "contains", "sale"), f("plan", "neq", "free")], "amount"),
]


def render(dialect, strategy, metrics=FILTERED):
    names = unit_columns.event_names(metrics)
    codes = {name: i for i, name in enumerate(names)}
    aliases = unit_columns.property_columns(metrics, codes)
    columns = [unit_columns.metric_columns(i, m, codes, aliases) for i, m in enumerate(metrics)]
    properties, params = unit_columns.metric_event_columns(aliases, dialect)
    sql = aggregation.metrics_sql(
        metrics, columns, names, strategy, dialect=dialect, properties=properties
    )
    return sql, params


def test_every_property_name_and_value_is_a_bound_parameter(strategy):
    """No name or value of a filter reaches the SQL text: they are parameters."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    for dialect, read in (
        (PostgresDialect(connection), aggregation.INDEX_LOOKUP),
        (PostgresDialect(connection), aggregation.HASH_JOIN),
        (SqliteDialect(connection), aggregation.HASH_JOIN),
    ):
        sql, params = render(dialect, read)
        for literal in ("'plan'", "amount", "tags", "sale", "free", "'pro'", "2.0"):
            assert literal not in sql, (literal, type(dialect).__name__)
        bound = " ".join(str(v) for v in params.values())
        for literal in ("plan", "amount", "tags", "sale", "free", "pro", "2.0", "3.0"):
            assert literal in bound, (literal, type(dialect).__name__)


def test_filters_differ_between_engines_only_inside_the_dialect(strategy):
    """With filters too, the dialect's fragments are the only difference between engines."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    shapes = set()
    for dialect in (PostgresDialect(connection), SqliteDialect(connection, version=(3, 45, 0))):
        plain, _ = render(dialect, aggregation.HASH_JOIN)
        tagged, _ = render(marked(dialect), aggregation.HASH_JOIN)
        assert tagged.replace("⟦", "").replace("⟧", "") == plain
        shapes.add(skeleton(tagged))
    assert len(shapes) == 1


def _plan(experiment, metrics):
    d = aggregation.current_dialect()
    sql, property_params = render(d, aggregation.INDEX_LOOKUP, metrics)
    names = unit_columns.event_names(metrics)
    params = {
        "experiment": experiment.pk,
        "project": experiment.project_id,
        "since": T0,
        "through": THROUGH,
        "earliest": T0 - timedelta(hours=24),
        **{f"name{i}": name for i, name in enumerate(names)},
        **property_params,
    }
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        try:
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")


@pytest.mark.django_db(transaction=True)
def test_postgres_reads_filtered_metrics_from_the_index_holding_properties(
    scenario, experiment, strategy
):
    """One index-only lookup per unit in the index that holds properties
    (metricevent_unit_ts_props), the few events too large for it from the other. The table is
    vacuumed first, as autovacuum keeps a live one: with its pages not yet marked all-visible
    the planner may as well read the table through the slim index."""
    if connection.vendor != "postgresql" or strategy != aggregation.INDEX_LOOKUP:
        pytest.skip("PostgreSQL plans")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE assignments_metricevent")
        cursor.execute("VACUUM ANALYZE assignments_exposure")
    plan = _plan(experiment, FILTERED)
    assert "Index Only Scan using metricevent_unit_ts_props" in plan, plan
    assert "metricevent_unit_ts_large" in plan, plan
    assert "Seq Scan" not in plan, plan
    # The unfiltered statement is unchanged: the slim covering index.
    plain = _plan(experiment, FILTERED[:1])
    assert re.search(r"Index Only Scan using metricevent_unit_ts(_p\d+_\w+)? on", plain), plain
