"""The running holdout on every serving path: /assign and /assign/bulk (no experiment, no
stored assignment, control instead of a shipped variant), /api/v1/evaluate (rollouts, experiment
rules and shipped experiments skip the holdout's units; force rules and the kill switch still
apply), the production payload that GrowthBook SDKs evaluate (the official SDK agrees with both
endpoints for units in and out of the holdout), and the holdout's exposures each path records."""

import json
import random
from datetime import timedelta

import pytest
from django.utils import timezone
from growthbook import GrowthBook

from assignments.models import Assignment, HoldoutArm, HoldoutExposure
from bucketing.holdout import GENERAL, HOLDOUT, arm
from experiments.holdouts import served_holdout
from experiments.models import Environment, Experiment
from experiments.services import experiment_conclude
from experiments.services.holdouts import holdout_create, holdout_end, holdout_start
from flags.services import flag_create
from tests.assignments.test_evaluate import client_for, configure
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
SHARE = 0.2  # the largest share: plenty of units in each arm
SCOPES = ("assign", "ingest", "evaluate")


@pytest.fixture
def world(project, metrics):
    """Experiments (running; running in a layer; concluded with a shipped variant), flags in
    production and staging (a targeted force rule then a 100% rollout; an experiment rule; an
    off flag), and a running holdout of 20%."""
    running_experiment(project)  # checkout-v2, hashed by id
    running_experiment(
        project, "search", layer="search", layer_start=0.0, layer_end=0.7, coverage=0.9
    )
    pricing = running_experiment(
        project,
        "pricing",
        variants=[
            {"key": "control", "weight": 0.5, "is_control": True, "value": 10},
            {"key": "cheap", "weight": 0.5, "value": 8},
        ],
    )
    experiment_conclude(experiment=pricing, decision="cheap", rationale="cheaper sells")
    flag_create(project=project, key="nav", name="Navigation")
    for environment in ("production", "staging"):
        configure(
            project,
            "nav",
            environment,
            enabled=True,
            rules=[
                {"id": "us", "type": "force", "condition": {"country": "US"}, "variation": "on"},
                {"id": "all", "type": "rollout", "weights": {"on": 1.0}},
            ],
        )
    flag_create(
        project=project,
        key="checkout-ui",
        name="Checkout UI",
        type="json",
        variations=[{"key": "control", "value": {"v": 1}}, {"key": "treatment", "value": {"v": 2}}],
        off_variation="control",
        default_variation="control",
    )
    configure(
        project,
        "checkout-ui",
        enabled=True,
        rules=[{"id": "ab", "type": "experiment", "experiment": "checkout-v2"}],
    )
    flag_create(project=project, key="kill", name="Killed")
    configure(
        project, "kill", enabled=False, rules=[{"id": "all", "type": "force", "variation": "on"}]
    )
    holdout = holdout_start(holdout=holdout_create(project=project, name="2027", share=SHARE))
    return holdout


def _units(count: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"user-{rng.getrandbits(48):x}", "country": rng.choice(["US", "DE", "FR"])}
        for _ in range(count)
    ]


def _payload(client, project) -> dict:
    response = client.get(f"/api/features/{project.client_key}")
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_payload_carries_the_holdout_filter_on_hashed_rules_only(client, project, world):
    features = _payload(client, project)["features"]
    expected = {
        "attribute": "id",
        "seed": world.seed,
        "hashVersion": 2,
        "ranges": [[SHARE, 1.0]],
    }
    assert features["checkout-v2"]["rules"][0]["filters"] == [expected]
    search = features["search"]["rules"][0]
    assert search["filters"][0] == expected
    assert search["filters"][1]["seed"] == "__search" and search["filters"][1]["ranges"] == [
        [0.0, 0.7]
    ]
    assert features["pricing"]["rules"] == [
        {"id": "pricing:shipped", "force": 8, "filters": [expected]}
    ]
    nav = features["nav"]["rules"]
    assert "filters" not in nav[0] and nav[1]["filters"] == [expected]
    assert features["checkout-ui"]["rules"][0]["filters"] == [expected]
    assert features["kill"] == {"defaultValue": False, "rules": []}
    staging = Environment.objects.get(project=project, key="staging")
    staged = json.loads(client.get(f"/api/features/{staging.client_key}").content)["features"]
    assert "filters" not in staged["nav"]["rules"][1]  # the holdout is production's


def _assign_bulk(service, units):
    body = {"units": [{"unit_id": u["id"], "attributes": u} for u in units]}
    response = service.post("/api/v1/assign/bulk", body, format="json")
    assert response.status_code == 200, response.content
    return [r["assignments"] for r in response.json()["results"]]


def test_the_sdk_agrees_with_assign_and_evaluate_in_and_out_of_the_holdout(client, project, world):
    """600 units (about 120 held out): for each, the official GrowthBook SDK on the production
    payload gives every experiment the variant /assign/bulk gives (or its default when /assign
    leaves the unit out) and every flag the value /api/v1/evaluate gives; held-out units never
    get an experiment, a shipped variant or the rollout, and still get the targeted force rule
    and the kill switch."""
    service = client_for(project, scopes=SCOPES)
    payload = _payload(client, project)
    gb = GrowthBook(attributes={}, features=payload["features"])
    units = _units(600)
    answers = _assign_bulk(service, units)
    held = seen_force_on_held = 0
    for unit, answer in zip(units, answers, strict=True):
        gb.set_attributes(unit)
        in_holdout = arm(world_spec(world), unit["id"]) == HOLDOUT
        held += in_holdout
        for key in ("checkout-v2", "search"):
            sdk = gb.eval_feature(key)
            if key in answer:
                assert not in_holdout
                assert (
                    sdk.source == "experiment"
                    and sdk.experimentResult.key == answer[key]["variant"]
                )
            else:
                assert sdk.source != "experiment"
        pricing = gb.eval_feature("pricing").value
        assert pricing == answer["pricing"]["value"] == (10 if in_holdout else 8)
        evaluated = service.post(
            "/api/v1/evaluate", {"unit_id": unit["id"], "attributes": unit}, format="json"
        ).json()["flags"]
        for key, result in evaluated.items():
            assert gb.eval_feature(key).value == result["value"], (key, unit, result)
        nav = evaluated["nav"]
        if in_holdout:
            assert (
                nav["reason"] in ("rule", "default")
                and evaluated["checkout-ui"]["reason"] == "default"
            )
            seen_force_on_held += nav["reason"] == "rule"
        else:
            assert nav["reason"] in ("rule", "rollout") and nav["value"] is True
        assert evaluated["kill"]["reason"] == "off"
    assert 80 < held < 170 and seen_force_on_held > 10


def world_spec(holdout):
    return served_holdout(holdout.project_id).spec


def test_held_out_units_keep_no_assignment_even_a_stored_one(project, world):
    """A unit assigned before the holdout started gets no experiment once it is held out (like
    the SDKs, which have no memory), and no held-out unit gets an assignment stored."""
    service = client_for(project, scopes=SCOPES)
    spec = world_spec(world)
    ids = [u["id"] for u in _units(300, seed=8)]
    held = [u for u in ids if arm(spec, u) == HOLDOUT]
    free = [u for u in ids if arm(spec, u) != HOLDOUT]
    experiment = Experiment.objects.get(project=project, key="checkout-v2")
    Assignment.objects.create(
        experiment=experiment,
        unit_id=held[0],
        variant=experiment.variants.get(key="treatment"),
        phase=experiment.phase,
    )
    one = service.post("/api/v1/assign", {"unit_id": held[0]}, format="json").json()
    assert "checkout-v2" not in one["assignments"]
    assert one["assignments"]["pricing"] == {
        "variant": "control",
        "value": 10,
        "in_experiment": False,
    }
    _assign_bulk(service, [{"id": u} for u in ids])
    stored = set(Assignment.objects.filter(experiment=experiment).values_list("unit_id", flat=True))
    assert stored & set(held) == {held[0]}  # only the row from before
    assert len(stored & set(free)) > 0.85 * len(free)  # coverage 1: the rest are assigned


def test_assign_records_the_holdouts_exposures_in_both_arms_only(project, world):
    service = client_for(project, scopes=SCOPES)
    spec = world_spec(world)
    ids = [u["id"] for u in _units(400, seed=9)]
    _assign_bulk(service, [{"id": u} for u in ids])
    rows = {e.unit_id: e for e in HoldoutExposure.objects.filter(holdout=world)}
    expected = {u: arm(spec, u) for u in ids if arm(spec, u) is not None}
    assert set(rows) == set(expected)
    codes = {HOLDOUT: HoldoutArm.HOLDOUT, GENERAL: HoldoutArm.GENERAL}
    assert all(rows[u].arm == codes[a] for u, a in expected.items())
    first = {u: e.ts for u, e in rows.items()}
    _assign_bulk(service, [{"id": u} for u in ids[:50]])  # seen again: the first time stays
    again = dict(HoldoutExposure.objects.filter(holdout=world).values_list("unit_id", "ts"))
    assert again == first


def test_tracked_evaluations_and_flag_exposure_events_record_exposures_in_production(
    project, world
):
    world.started_at = timezone.now() - timedelta(days=1)  # events of the last day count
    world.save()
    spec = world_spec(world)
    ids = [u for u in (x["id"] for x in _units(200, seed=11)) if arm(spec, u) is not None]
    service = client_for(project, scopes=SCOPES)
    service.post("/api/v1/evaluate", {"unit_id": ids[0], "track": False}, format="json")
    assert not HoldoutExposure.objects.exists()  # untracked: nothing written
    service.post("/api/v1/evaluate", {"unit_id": ids[0], "track": True}, format="json")
    assert HoldoutExposure.objects.filter(unit_id=ids[0]).count() == 1
    now = timezone.now()
    events = [
        {"event_id": f"f-{i}", "type": "exposure", "flag": "nav", "variation": "on",
         "unit_id": u, "timestamp": (now - timedelta(seconds=i)).isoformat()}
        for i, u in enumerate(ids[1:6], start=1)
    ]  # fmt: skip
    events.append(
        {"event_id": "before", "type": "exposure", "flag": "nav", "variation": "on",
         "unit_id": ids[6], "timestamp": (now - timedelta(days=2)).isoformat()}
    )  # fmt: skip
    events.append(
        {"event_id": "exp", "type": "exposure", "experiment": "checkout-v2",
         "variant": "control", "unit_id": ids[7], "timestamp": now.isoformat()}
    )  # fmt: skip
    posted = service.post("/api/v1/events", {"events": events}, format="json")
    assert posted.status_code == 202 and posted.json()["accepted"] == 7
    recorded = set(HoldoutExposure.objects.values_list("unit_id", flat=True))
    assert recorded == {ids[0], *ids[1:6]}  # not before the start; experiment exposures never
    late = [
        {"event_id": "late", "type": "exposure", "flag": "nav", "variation": "on",
         "unit_id": ids[1], "timestamp": (now - timedelta(hours=5)).isoformat()}
    ]  # fmt: skip
    service.post("/api/v1/events", {"events": late}, format="json")
    moved = HoldoutExposure.objects.get(unit_id=ids[1]).ts
    assert abs((moved - (now - timedelta(hours=5))).total_seconds()) < 1  # the earliest wins
    staging = client_for(project, "staging", SCOPES)
    staged = [
        {"event_id": "s-1", "type": "exposure", "flag": "nav", "variation": "on",
         "unit_id": ids[8], "timestamp": now.isoformat()}
    ]  # fmt: skip
    assert staging.post("/api/v1/events", {"events": staged}, format="json").json()["accepted"]
    staging.post("/api/v1/evaluate", {"unit_id": ids[9], "track": True}, format="json")
    assert not HoldoutExposure.objects.filter(unit_id__in=ids[8:10]).exists()


def test_starting_and_ending_the_holdout_change_what_is_served_at_once(client, project, world):
    service = client_for(project, scopes=SCOPES)
    spec = world_spec(world)
    unit = next(u["id"] for u in _units(200, seed=3) if arm(spec, u["id"]) == HOLDOUT)
    before = client.get(f"/api/features/{project.client_key}")
    assert (
        service.post("/api/v1/assign", {"unit_id": unit}, format="json").json()["assignments"][
            "pricing"
        ]["variant"]
        == "control"
    )
    holdout_end(holdout=world)
    after = client.get(f"/api/features/{project.client_key}")
    assert after["ETag"] != before["ETag"]
    assert "filters" not in json.loads(after.content)["features"]["checkout-v2"]["rules"][0]
    answer = service.post("/api/v1/assign", {"unit_id": unit}, format="json").json()
    assert answer["assignments"]["pricing"]["variant"] == "cheap"
    assert "checkout-v2" in answer["assignments"]


def test_a_returning_unit_is_not_recorded_again(project, world):
    """The first /assign of a unit of either arm records it; the process remembers that, so the
    unit's later calls write nothing for the holdout."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    service = client_for(project, scopes=SCOPES)
    spec = world_spec(world)
    unit = next(u["id"] for u in _units(100, seed=12) if arm(spec, u["id"]) is not None)
    with CaptureQueriesContext(connection) as first:
        service.post("/api/v1/assign", {"unit_id": unit}, format="json")
    with CaptureQueriesContext(connection) as again:
        service.post("/api/v1/assign", {"unit_id": unit}, format="json")
    holdout_writes = [q for q in first.captured_queries if "holdoutexposure" in q["sql"]]
    assert len(holdout_writes) == 1
    assert not [q for q in again.captured_queries if "holdoutexposure" in q["sql"]]
