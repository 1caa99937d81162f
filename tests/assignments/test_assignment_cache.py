"""The assignment cache: returning units answered without the database, and exact after every
change of what an experiment serves (pause, conclusion, a new phase, a ramp)."""

import pytest

from assignments.models import Assignment
from assignments.services import assignments_get_or_create
from assignments.services.assignment_cache import cached_variants, forget_all
from experiments.services import (
    experiment_conclude,
    experiment_pause,
    experiment_ramp,
    experiment_resume,
    experiment_update,
)
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db

UNITS = [f"unit-{i}" for i in range(50)]


def _variants(project, units=UNITS, attributes=None):
    answers = assignments_get_or_create(
        project=project, units=[(u, dict(attributes or {})) for u in units]
    )
    return {u: a["checkout-v2"]["variant"] for u, a in zip(units, answers, strict=True) if a}


def test_a_returning_unit_is_answered_without_the_database(
    project,
    metrics,
    service,
    django_assert_num_queries,
    django_capture_on_commit_callbacks,
    settings,
):
    """Once stored, a unit's next /assign asks the database nothing: key, specs and the
    assignment all come from the caches."""
    settings.ABACUS_SERVING_RECHECK_SECONDS = 600  # only a change may send it to the database
    running_experiment(project)
    with django_capture_on_commit_callbacks(execute=True):  # cached once the row commits
        first = service.post("/api/v1/assign", {"unit_id": "u1"}, format="json").json()
    with django_assert_num_queries(0):
        again = service.post("/api/v1/assign", {"unit_id": "u1"}, format="json").json()
    assert again == first


def test_cached_answers_equal_the_stored_rows(project, metrics):
    """What the cache answers is what the database holds, unit by unit (and it is kept when the
    assignment is stored)."""
    experiment = running_experiment(project)
    first = _variants(project)
    stored = dict(
        Assignment.objects.filter(experiment=experiment).values_list("unit_id", "variant__key")
    )
    assert first == stored
    assert _variants(project) == stored  # from the cache
    forget_all()
    assert _variants(project) == stored  # from the database again


def test_units_stored_by_another_path_are_read_then_cached(project, metrics):
    """An assignment written without /assign (ingestion's first exposure) is read once from the
    database, then cached; the cache never invents one."""
    experiment = running_experiment(project)
    treatment = experiment.variants.get(key="treatment")
    Assignment.objects.create(experiment=experiment, unit_id="sdk-unit", variant=treatment)
    tag = _tag(project, experiment)
    assert cached_variants([(tag, "sdk-unit")]) == {}
    assert _variants(project, ["sdk-unit"]) == {"sdk-unit": "treatment"}
    assert cached_variants([(tag, "sdk-unit")]) == {(tag, "sdk-unit"): treatment.pk}


def test_paused_and_concluded_experiments_answer_at_once_whatever_is_cached(project, metrics):
    """Pausing gives everyone control at once, resuming gives back the stored variants,
    concluding gives the shipped variant: the cache is asked only for running experiments."""
    experiment = running_experiment(project)
    first = _variants(project)
    experiment_pause(experiment=experiment)
    assert set(_variants(project).values()) == {"control"}
    experiment_resume(experiment=experiment)
    assert _variants(project) == first
    experiment_conclude(experiment=experiment, decision="treatment", rationale="won")
    assert set(_variants(project).values()) == {"treatment"}


def test_a_new_phase_keeps_stored_variants_and_applies_the_new_audience(project, metrics):
    """A change of audience starts a new phase (new cache entries): units that still qualify
    keep their stored variant, as the product defines; the others leave the experiment at
    once."""
    experiment = running_experiment(project)
    first = _variants(project, attributes={"country": "US"})
    old_tag = _tag(project, experiment)
    experiment_update(experiment=experiment, targeting={"country": "DE"})
    assert _tag(project, experiment) != old_tag
    assert _variants(project, attributes={"country": "US"}) == {}
    assert _variants(project, attributes={"country": "DE"}) == first


def test_a_ramp_includes_new_units_at_once_and_keeps_the_stored(project, metrics):
    """Coverage up: units left out before are assigned now; stored units keep their variant."""
    experiment = running_experiment(project, coverage=0.3)
    before = _variants(project)
    experiment_ramp(experiment=experiment, coverage=1.0)
    after = _variants(project)
    assert len(after) == len(UNITS) > len(before)
    assert {u: after[u] for u in before} == before


def _tag(project, experiment):
    from assignments.selectors import project_specs

    return project_specs(project).assignment_tags[experiment.key]
