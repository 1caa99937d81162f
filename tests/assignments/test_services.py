"""Sticky assignment: targeting, coverage, layers, lifecycle states and broken definitions."""

import logging

import pytest
from django.db.models import Count
from django.utils import timezone

from assignments.models import Assignment
from assignments.selectors import project_specs
from assignments.services import assignments_get_or_create
from bucketing.payload import evaluate
from core.errors import DomainError
from experiments.models import Experiment, ExperimentStatus, Variant
from experiments.services import (
    experiment_conclude,
    experiment_pause,
    experiment_ramp,
    experiment_resume,
    experiment_rollback,
    experiment_update,
)
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db

UNITS = [f"unit-{i}" for i in range(400)]


def _assign(project, units=UNITS, keys=None, attributes=None):
    answers = assignments_get_or_create(
        project=project,
        units=[(u, dict(attributes or {})) for u in units],
        experiment_keys=keys,
    )
    return dict(zip(units, answers, strict=True))


def _variants(answers, key="checkout-v2"):
    return {u: a[key]["variant"] for u, a in answers.items() if key in a}


def test_first_assignment_is_stored_once_and_returned_later(project, metrics):
    running_experiment(project)
    first = _variants(_assign(project))
    assert set(first.values()) == {"control", "treatment"}
    assert Assignment.objects.count() == len(UNITS)
    assert _variants(_assign(project)) == first
    assert Assignment.objects.count() == len(UNITS)


def test_assignment_equals_the_pure_decision(project, metrics):
    """The stored variant is the GrowthBook hash's answer (the SDK oracle is in test_features)."""
    experiment = running_experiment(project)
    spec = project_specs(project).specs[experiment.key]
    got = _variants(_assign(project))
    assert got == {u: evaluate(spec, {"id": u}) for u in UNITS}


def test_single_and_bulk_calls_agree(project, metrics):
    running_experiment(project, coverage=0.5)
    bulk = _variants(_assign(project, units=UNITS[:300]))
    Assignment.objects.all().delete()
    single = {}
    for u in UNITS[:300]:
        single.update(_variants(_assign(project, units=[u])))
    assert single == bulk


def test_stored_assignment_wins_over_the_hash(project, metrics):
    """Sticky: a stored row is returned even where the hash now says otherwise."""
    experiment = running_experiment(project)
    spec = project_specs(project).specs[experiment.key]
    unit = next(u for u in UNITS if evaluate(spec, {"id": u}) == "control")
    treatment = experiment.variants.get(key="treatment")
    Assignment.objects.create(experiment=experiment, unit_id=unit, variant=treatment)
    assert _variants(_assign(project, units=[unit])) == {unit: "treatment"}


def test_value_of_the_variant_is_returned(project, metrics):
    running_experiment(project)
    answer = _assign(project, units=["u1"])["u1"]["checkout-v2"]
    assert answer["value"] == ({"v": 1} if answer["variant"] == "control" else {"v": 2})
    assert "in_experiment" not in answer


def test_targeting_excludes_units_without_storing(project, metrics):
    running_experiment(project, targeting={"country": {"$in": ["US", "CA"]}})
    assert _variants(_assign(project, attributes={"country": "DE"})) == {}
    assert not Assignment.objects.exists()
    assert len(_variants(_assign(project, attributes={"country": "US"}))) == len(UNITS)


def test_targeting_applies_to_units_already_assigned(project, metrics):
    """Like the SDKs, a rule's condition is checked before the sticky assignment is used."""
    running_experiment(project, targeting={"country": "US"})
    _assign(project, units=["u1"], attributes={"country": "US"})
    assert _assign(project, units=["u1"], attributes={"country": "DE"})["u1"] == {}
    assert "checkout-v2" in _assign(project, units=["u1"], attributes={"country": "US"})["u1"]


def test_coverage_leaves_units_out_and_ramping_keeps_those_in(project, metrics):
    experiment = running_experiment(project, coverage=0.2)
    before = _variants(_assign(project))
    assert 0.1 * len(UNITS) < len(before) < 0.3 * len(UNITS)
    experiment_ramp(experiment=experiment, coverage=0.8)
    after = _variants(_assign(project))
    assert len(after) > 0.6 * len(UNITS)
    assert all(after[u] == v for u, v in before.items())


def test_layer_slices_make_experiments_mutually_exclusive(project, metrics):
    running_experiment(project, "left", layer="search", layer_start=0.0, layer_end=0.5)
    running_experiment(project, "right", layer="search", layer_start=0.5, layer_end=1.0)
    answers = _assign(project)
    left, right = _variants(answers, "left"), _variants(answers, "right")
    assert left and right
    assert not set(left) & set(right)
    assert len(left) + len(right) == len(UNITS)


def test_named_subset_only_answers_those_experiments(project, metrics):
    running_experiment(project, "a")
    running_experiment(project, "b")
    answers = _assign(project, units=["u1"], keys=["b"])
    assert set(answers["u1"]) == {"b"}
    assert Assignment.objects.get().experiment.key == "b"


def test_unknown_or_draft_experiment_is_a_domain_error(project, metrics):
    from experiments.services import experiment_create

    experiment_create(project=project, **experiment_payload("draft-one"))
    with pytest.raises(DomainError, match="nope"):
        _assign(project, units=["u1"], keys=["nope"])
    with pytest.raises(DomainError, match="draft-one"):
        _assign(project, units=["u1"], keys=["draft-one"])


def test_draft_experiments_are_not_served(project, metrics):
    from experiments.services import experiment_create

    experiment_create(project=project, **experiment_payload("draft-one"))
    assert _assign(project, units=["u1"])["u1"] == {}


@pytest.mark.parametrize("stop", [experiment_pause, experiment_rollback])
def test_paused_and_rolled_back_give_everyone_control_without_storing(project, metrics, stop):
    experiment = running_experiment(project)
    _assign(project, units=UNITS[:50])
    stored = Assignment.objects.count()
    stop(experiment=experiment)
    answers = _assign(project)
    assert {a["checkout-v2"]["variant"] for a in answers.values()} == {"control"}
    assert all(a["checkout-v2"]["in_experiment"] is False for a in answers.values())
    assert all(a["checkout-v2"]["value"] == {"v": 1} for a in answers.values())
    assert Assignment.objects.count() == stored


def test_resumed_experiment_returns_the_stored_assignments(project, metrics):
    experiment = running_experiment(project)
    first = _variants(_assign(project))
    experiment_pause(experiment=experiment)
    experiment_resume(experiment=Experiment.objects.get(pk=experiment.pk))
    assert _variants(_assign(project)) == first


def test_concluded_experiment_serves_the_shipped_variant_to_everyone(project, metrics):
    experiment = running_experiment(project, coverage=0.3, targeting={"country": "US"})
    experiment_conclude(experiment=experiment, decision="treatment")
    answers = _assign(project, attributes={"country": "DE"})
    assert all(
        a["checkout-v2"] == {"variant": "treatment", "value": {"v": 2}, "in_experiment": False}
        for a in answers.values()
    )
    assert not Assignment.objects.exists()


def test_concluded_without_a_shipped_variant_serves_control(project, metrics):
    experiment = running_experiment(project)
    Experiment.objects.filter(pk=experiment.pk).update(
        status=ExperimentStatus.CONCLUDED, decision_variant="", updated_at=timezone.now()
    )
    answer = _assign(project, units=["u1"])["u1"]["checkout-v2"]
    assert answer == {"variant": "control", "value": {"v": 1}, "in_experiment": False}


def test_broken_experiment_is_skipped_with_a_logged_error(project, metrics, caplog):
    """An inconsistent definition (here two controls) never breaks the other experiments."""
    running_experiment(project, "healthy")
    broken = running_experiment(project, "broken")
    Variant.objects.filter(experiment=broken).update(is_control=True)
    Experiment.objects.filter(pk=broken.pk).update(updated_at=timezone.now())
    with caplog.at_level(logging.ERROR, logger="assignments.selectors"):
        answers = _assign(project, units=["u1"])
    assert set(answers["u1"]) == {"healthy"}
    assert "broken" in caplog.text
    assert set(_assign(project, units=["u1"], keys=["broken", "healthy"])["u1"]) == {"healthy"}


def test_definition_changes_are_seen_at_once(project, metrics):
    """The spec cache is keyed by the experiments' last change, so edits apply immediately."""
    experiment = running_experiment(project, coverage=0.1)
    assert len(_variants(_assign(project))) < 0.2 * len(UNITS)
    experiment_update(experiment=experiment, coverage=1.0)
    assert len(_variants(_assign(project))) == len(UNITS)


def test_assignment_records_the_phase(project, metrics):
    experiment = running_experiment(project)
    experiment_update(experiment=experiment, targeting={"country": {"$exists": True}})
    _assign(project, units=["u1"], attributes={"country": "US"})
    assert Assignment.objects.get().phase == Experiment.objects.get(pk=experiment.pk).phase == 1


def test_hash_attribute_other_than_id(project, metrics):
    experiment = running_experiment(project, hash_attribute="device_id")
    spec = project_specs(project).specs[experiment.key]
    got = _variants(_assign(project))
    assert got == {u: evaluate(spec, {"device_id": u}) for u in UNITS}


def test_repeated_unit_in_one_call_gets_one_answer(project, metrics):
    running_experiment(project)
    answers = assignments_get_or_create(
        project=project, units=[("u1", {}), ("u1", {}), ("u2", {})], experiment_keys=None
    )
    assert answers[0] == answers[1]
    assert Assignment.objects.count() == 2


def test_stored_split_matches_the_weights(project, metrics):
    """Chi-square goodness of fit of 20,000 stored assignments to 0.2 / 0.3 / 0.5 (the 1M-unit
    uniformity and independence tests of the hash itself are in test_hashing.py)."""
    from scipy.stats import chisquare

    running_experiment(
        project,
        "three-arms",
        variants=[
            {"key": "control", "weight": 0.2, "is_control": True},
            {"key": "b", "weight": 0.3},
            {"key": "c", "weight": 0.5},
        ],
    )
    units = [f"split-{i}" for i in range(20_000)]
    for lo in range(0, len(units), 1000):
        _assign(project, units=units[lo : lo + 1000])
    counts = dict(
        Assignment.objects.values_list("variant__key")
        .annotate(n=Count("id"))
        .values_list("variant__key", "n")
    )
    observed = [counts["control"], counts["b"], counts["c"]]
    assert sum(observed) == len(units)
    assert chisquare(observed, [0.2 * len(units), 0.3 * len(units), 0.5 * len(units)]).pvalue > 1e-3
