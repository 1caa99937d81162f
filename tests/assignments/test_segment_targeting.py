"""An experiment targeting a saved segment is served alike everywhere: /api/v1/assign (and
/assign/bulk) on the server and the `growthbook` SDK evaluating /api/features/<client key>
agree unit by unit, and units outside the segment are never assigned."""

import json
import random

import pytest
from growthbook import GrowthBook

from assignments.models import Assignment
from flags.services import segment_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
UNITS = 3000
SINGLE = 300  # the first units go through /assign one by one, the others through /assign/bulk


def _units(count: int) -> list[dict]:
    rng = random.Random(23)
    units = []
    for _ in range(count):
        attributes = {"plan": rng.choice(["free", "pro"]), "age": rng.choice([16, 18, 30, None])}
        if rng.random() < 0.95:
            attributes["country"] = rng.choice(["US", "CA", "DE", "us"])
        units.append({"unit_id": f"{rng.getrandbits(64):016x}", "attributes": attributes})
    return units


def _in_beta(unit: dict, include: set[str], exclude: set[str]) -> bool:
    """The segment's meaning, written out independently of the code under test."""
    attrs, unit_id = unit["attributes"], unit["unit_id"]
    matches = attrs["plan"] == "pro" and attrs.get("country") in ("US", "CA")
    return (unit_id in include or matches) and unit_id not in exclude


def _setup(project, units):
    matching = [u["unit_id"] for u in units if _in_beta(u, set(), set())]
    others = [u["unit_id"] for u in units if not _in_beta(u, set(), set())]
    include, exclude = others[:150], matching[:150]  # some outsiders in, some insiders out
    segment_create(
        project=project,
        key="beta",
        name="Beta testers",
        condition={"plan": "pro", "country": {"$in": ["US", "CA"]}},
        include=include,
        exclude=exclude,
    )
    segment_create(project=project, key="vips", name="VIPs", include=others[150:400])
    running_experiment(
        project, "beta-checkout", segment="beta", targeting={"age": {"$gte": 18}}, coverage=0.8
    )
    running_experiment(project, "vip-pricing", segment="vips", seed="vip-1")
    running_experiment(project, "everyone")  # no segment: the others must not disturb it
    return set(include), set(exclude), set(others[150:400])


def _answers(service, units: list[dict]) -> list[dict]:
    answers = []
    for unit in units[:SINGLE]:
        r = service.post("/api/v1/assign", unit, format="json")
        assert r.status_code == 200, r.content
        answers.append(r.json())
    for lo in range(SINGLE, len(units), 1000):
        body = json.dumps({"units": units[lo : lo + 1000]})
        r = service.generic("POST", "/api/v1/assign/bulk", body, content_type="application/json")
        assert r.status_code == 200, r.content
        answers += r.json()["results"]
    return answers


def test_assign_and_the_sdk_agree_on_a_segment_targeted_experiment(project, metrics, service):
    units = _units(UNITS)
    include, exclude, vips = _setup(project, units)
    payload = service.get(f"/api/features/{project.client_key}").json()
    gb = GrowthBook(attributes={}, features=payload["features"])
    answers = _answers(service, units)
    assigned: dict[str, set[str]] = {"beta-checkout": set(), "vip-pricing": set()}
    seen: dict[str, set] = {"beta-checkout": set(), "vip-pricing": set()}
    for unit, answer in zip(units, answers, strict=True):
        assert answer["unit_id"] == unit["unit_id"]
        gb.set_attributes({**unit["attributes"], "id": unit["unit_id"]})
        for key in ("beta-checkout", "vip-pricing", "everyone"):
            result = gb.eval_feature(key)
            exp = result.experimentResult
            sdk = exp.key if result.source == "experiment" and exp.inExperiment else None
            ours = answer["assignments"].get(key)
            assert sdk == (ours["variant"] if ours else None), (key, unit)
            if ours:
                assert result.value == ours["value"], (key, unit)
                assigned.setdefault(key, set()).add(unit["unit_id"])
            seen.setdefault(key, set()).add(sdk)
        # Outside the segment (or under age), never in the experiment.
        in_beta = _in_beta(unit, include, exclude)
        adult = isinstance(unit["attributes"]["age"], int) and unit["attributes"]["age"] >= 18
        if not (in_beta and adult):
            assert "beta-checkout" not in answer["assignments"], unit
        if unit["unit_id"] not in vips:
            assert "vip-pricing" not in answer["assignments"], unit
    assert seen["beta-checkout"] == seen["vip-pricing"] == {None, "control", "treatment"}
    assert seen["everyone"] == {"control", "treatment"}
    # Both lists take effect: included outsiders get in, excluded insiders never do.
    assert assigned["beta-checkout"] & include
    assert not assigned["beta-checkout"] & exclude
    assert assigned["vip-pricing"] <= vips and len(assigned["vip-pricing"]) > 100
    # Only units in the experiment have a stored assignment.
    for key in ("beta-checkout", "vip-pricing"):
        stored = set(
            Assignment.objects.filter(experiment__key=key).values_list("unit_id", flat=True)
        )
        assert stored == assigned[key], key
