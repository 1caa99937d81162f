"""The breakdown aggregation against hand-computed per-level values (SQLite and PostgreSQL):
the level of a unit is the attribute on its first exposure in the window, levels past the cap
are one "other" level, units without the attribute are "none"."""

from datetime import timedelta

import pytest
from django.db import connection

from analysis import aggregation, breakdown_aggregation, unit_columns
from analysis.aggregation import MetricSpec
from analysis.breakdown_aggregation import Breakdown, Level, breakdown_aggregates
from analysis.sql import builders
from analysis.sql.dialects import PostgresDialect, SqliteDialect
from assignments.models import Exposure
from tests.analysis import test_aggregation as base
from tests.analysis.test_aggregation import (
    T0,
    THROUGH,
    assert_stats,
    event,
    h,
    marked,
    skeleton,
    stats_of,
)

# The results' aggregation tests' fixtures: each test runs with each way of reading events.
strategy, experiment, arms = base.strategy, base.experiment, base.arms

pytestmark = pytest.mark.django_db


def expose(experiment, variant, unit, at, attributes=None):
    """An exposure (test_aggregation's) carrying ``attributes``."""
    base.expose(experiment, variant, unit, at)
    if attributes is not None:
        Exposure.objects.filter(pk=Exposure.objects.latest("pk").pk).update(attributes=attributes)


def breakdown(experiment, *metrics, dimension="country", levels=20, through=THROUGH):
    return breakdown_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=list(metrics),
        since=T0,
        through=through,
        breakdown=Breakdown(dimension, levels),
    )


REVENUE = MetricSpec("revenue", "mean", "purchase", window_hours=24)


@pytest.fixture
def countries(experiment, arms):
    """Units by country; revenue per unit in the comment (window 24 h after first exposure)."""
    control, treatment = arms
    p = experiment.project
    # DE: c1 (10), c2 (0), t1 (20 + 5), t2 (1)
    expose(experiment, control, "c1", h(1), {"country": "DE", "platform": "ios"})
    event(p, "c1", "purchase", h(2), 10)
    expose(experiment, control, "c2", h(1), {"country": "DE"})
    expose(experiment, treatment, "t1", h(1), {"country": "DE"})
    event(p, "t1", "purchase", h(2), 20)
    event(p, "t1", "purchase", h(3), 5)
    expose(experiment, treatment, "t2", h(2), {"country": "DE"})
    event(p, "t2", "purchase", h(3), 1)
    # FR: c3 (4), t3 (6); c3 later says DE: its first exposure decides.
    expose(experiment, control, "c3", h(1), {"country": "FR"})
    expose(experiment, control, "c3", h(4), {"country": "DE"})
    event(p, "c3", "purchase", h(5), 4)
    expose(experiment, treatment, "t3", h(1), {"country": "FR"})
    event(p, "t3", "purchase", h(5), 6)
    # t4: an exposure before the phase said FR (ignored); in the window it says "IT" (3).
    expose(experiment, treatment, "t4", h(-2), {"country": "FR"})
    expose(experiment, treatment, "t4", h(3), {"country": "IT"})
    event(p, "t4", "purchase", h(4), 3)
    # none: no attributes (c4: 2), no country (t5: 7), a list (c5: 0), null (t6: 0), and a
    # first exposure without the attribute though a later one has it (c6: 0).
    expose(experiment, control, "c4", h(1))
    event(p, "c4", "purchase", h(2), 2)
    expose(experiment, treatment, "t5", h(1), {"platform": "web"})
    event(p, "t5", "purchase", h(2), 7)
    expose(experiment, control, "c5", h(1), {"country": ["DE"]})
    expose(experiment, treatment, "t6", h(1), {"country": None})
    expose(experiment, control, "c6", h(1))
    expose(experiment, control, "c6", h(2), {"country": "DE"})
    # a unit exposed to both variants is left out of its level (and of every level).
    expose(experiment, control, "m1", h(1), {"country": "DE"})
    expose(experiment, treatment, "m1", h(2), {"country": "DE"})
    event(p, "m1", "purchase", h(3), 1000)
    # exposed after the cut-off: not counted.
    expose(experiment, control, "late", THROUGH + timedelta(hours=1), {"country": "DE"})
    return control, treatment


def by_level(result):
    return {(lv.level.kind, lv.level.value): lv for lv in result.levels}


def test_units_count_in_the_level_of_their_first_exposure(experiment, countries):
    """Per level and variant, the sufficient statistics of the units' revenue, as by hand; the
    levels come most units first, then 'none'."""
    control, treatment = countries
    result = breakdown(experiment, REVENUE)
    assert result.errors == {}
    assert [(lv.level.kind, lv.level.value) for lv in result.levels] == [
        ("value", "DE"),
        ("value", "FR"),
        ("value", "IT"),
        ("none", None),
    ]
    levels = by_level(result)
    expected = {
        ("value", "DE"): ([10, 0], [25, 1]),
        ("value", "FR"): ([4], [6]),
        ("value", "IT"): ([], [3]),
        ("none", None): ([2, 0, 0], [7, 0]),
    }
    for key, (c_values, t_values) in expected.items():
        level = levels[key]
        assert level.counts.units_by_variant == {
            v.pk: len(vals) for v, vals in ((control, c_values), (treatment, t_values)) if vals
        }, key
        stats = level.metrics["revenue"].stats
        for variant, values in ((control, c_values), (treatment, t_values)):
            if values:
                assert_stats(stats[variant.pk], stats_of(values))
            else:
                assert variant.pk not in stats
    assert levels[("value", "DE")].counts.multi_variant_units == 1  # m1, left out


def test_values_past_the_cap_are_one_other_level(experiment, countries):
    """With two levels kept, DE and FR stay (most units) and IT joins 'other'."""
    _, treatment = countries
    levels = by_level(breakdown(experiment, REVENUE, levels=2))
    assert list(levels) == [("value", "DE"), ("value", "FR"), ("other", None), ("none", None)]
    other = levels[("other", None)]
    assert other.counts.units_by_variant == {treatment.pk: 1}
    assert_stats(other.metrics["revenue"].stats[treatment.pk], stats_of([3]))


def test_ties_at_the_cap_go_to_the_first_value_by_its_characters(experiment, arms):
    """Two values with as many units: the one that sorts first is kept (the same on both
    databases: byte order, not the database's collation)."""
    control, _ = arms
    expose(experiment, control, "a", h(1), {"country": "b"})
    expose(experiment, control, "b", h(1), {"country": "B"})
    expose(experiment, control, "c", h(1), {"country": "a"})
    levels = by_level(breakdown(experiment, levels=1))
    assert list(levels) == [("value", "B"), ("other", None)]


def test_numbers_and_booleans_are_levels_by_their_json_text(experiment, arms):
    """A level is the attribute's text: numbers as JSON writes them, booleans true/false."""
    control, treatment = arms
    expose(experiment, control, "c1", h(1), {"new": True, "visits": 3})
    expose(experiment, treatment, "t1", h(1), {"new": False, "visits": 3})
    expose(experiment, treatment, "t2", h(1), {"new": True, "visits": 2.5})
    new = by_level(breakdown(experiment, dimension="new"))
    assert {k: v.counts.units for k, v in new.items()} == {
        ("value", "true"): 2,
        ("value", "false"): 1,
    }
    visits = by_level(breakdown(experiment, dimension="visits"))
    assert {k: v.counts.units for k, v in visits.items()} == {
        ("value", "3"): 2,
        ("value", "2.5"): 1,
    }


def test_a_breakdown_without_metrics_counts_units_per_level(experiment, countries):
    """No metrics: the levels and their units still come back (one counting statement)."""
    control, treatment = countries
    levels = by_level(breakdown(experiment))
    assert {k: v.counts.units_by_variant for k, v in levels.items()} == {
        ("value", "DE"): {control.pk: 2, treatment.pk: 2},
        ("value", "FR"): {control.pk: 1, treatment.pk: 1},
        ("value", "IT"): {treatment.pk: 1},
        ("none", None): {control.pk: 3, treatment.pk: 2},
    }


def test_winsorization_caps_are_those_of_all_units(experiment, countries):
    """Each level's values are capped at the experiment's caps (arms and levels pooled), so a
    breakdown adds up to the results."""
    spec = MetricSpec("revenue", "mean", "purchase", window_hours=24, winsorize_quantile=0.9)
    overall = aggregation.experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=[spec],
        since=T0,
        through=THROUGH,
    ).metrics["revenue"]
    result = breakdown(experiment, spec)
    for level in result.levels:
        assert level.metrics["revenue"].caps == overall.caps
    for variant_id, total in overall.stats.items():
        parts = [lv.metrics["revenue"].stats.get(variant_id) for lv in result.levels]
        parts = [p for p in parts if p is not None]
        assert sum(p.n for p in parts) == total.n
        assert sum(p.sum for p in parts) == pytest.approx(total.sum)
        assert sum(p.sum_sq for p in parts) == pytest.approx(total.sum_sq)


def test_the_dimension_is_a_bound_parameter(experiment, arms):
    """Any attribute name, quotes and SQL included, is a value: it never reaches the SQL text."""
    control, _ = arms
    name = "it's; DROP TABLE x --"
    expose(experiment, control, "c1", h(1), {name: "yes"})
    levels = by_level(breakdown(experiment, REVENUE, dimension=name))
    assert list(levels) == [("value", "yes")]
    assert Exposure.objects.count() == 1


def test_the_breakdown_statement_differs_between_engines_only_in_dialect_fragments(strategy):
    """Like the results' statement: masked, PostgreSQL's and SQLite's breakdown statements are
    the same text, and the dimension is a placeholder."""
    if strategy != aggregation.HASH_JOIN:
        pytest.skip("checked once")
    names = unit_columns.event_names([REVENUE])
    columns = [unit_columns.metric_columns(0, REVENUE, {n: i for i, n in enumerate(names)})]
    texts = set()
    for dialect in (PostgresDialect(connection), SqliteDialect(connection, version=(3, 45))):
        sql = aggregation.metrics_sql([REVENUE], columns, names, dialect=marked(dialect), levels=3)
        assert "%(dimension)s" in sql and "LIMIT 3" in sql
        texts.add(skeleton(sql))
        counts = builders.breakdown_counts_sql(marked(dialect), 3)
        texts.add(skeleton(counts))
    assert len(texts) == 2  # one metrics statement, one counting statement


def test_level_kinds_map_from_the_statement(experiment, arms):
    """The statement's bucket codes name the level kinds (a value, the others, none)."""
    by_level = breakdown_aggregation.by_level
    assert by_level([(builders.LEVEL_VALUE, "DE", 1), (builders.LEVEL_NONE, None, 2)])
    assert Level("value", "DE") in by_level([(builders.LEVEL_VALUE, "DE", 1)])
    assert Level("other") in by_level([(builders.LEVEL_OTHER, None, 1)])
