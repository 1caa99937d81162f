"""POST /api/v1/evaluate: every flag's value, variation, reason and rule for one unit, in the API
key's environment (or the body's), agreeing with the GrowthBook SDK on the same payload; usage
counted, exposures stored when tracked."""

import json
import random
import time

import pytest
from growthbook import GrowthBook
from rest_framework.test import APIClient

from assignments.models import FlagExposure
from assignments.services import flag_usage_flush
from assignments.services.evaluate import MAX_EVALUATE_FLAGS
from experiments.models import Environment
from experiments.services import api_key_create, project_create
from flags.models import FlagUsage
from flags.services import flag_create, flag_environment_update, flag_update, segment_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
REASONS = {"off", "prerequisite", "rule", "rollout", "experiment", "default"}


def client_for(project, environment="production", scopes=("evaluate",)):
    secret = api_key_create(
        project=project, name=f"svc-{environment}", scopes=scopes, environment=environment
    ).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def evaluate(client, body):
    return client.post("/api/v1/evaluate", body, format="json")


def configure(project, key, environment="production", **change):
    from flags.models import Flag

    flag_environment_update(
        flag=Flag.objects.get(project=project, key=key),
        environment=Environment.objects.get(project=project, key=environment),
        **change,
    )


@pytest.fixture
def flags(project, metrics):
    """One flag per reason in production, and a flag that is on only in staging."""
    running_experiment(project)  # checkout-v2: control / treatment
    segment_create(project=project, key="staff", name="Staff", include=["staff-1"])
    flag_create(project=project, key="kill", name="Off in production")
    flag_create(
        project=project,
        key="theme",
        name="Theme",
        type="string",
        variations=[{"key": "light", "value": "light"}, {"key": "dark", "value": "dark"}],
        off_variation="light",
        default_variation="dark",
    )
    configure(project, "theme", enabled=True)
    flag_create(project=project, key="nav", name="New navigation")
    configure(
        project,
        "nav",
        enabled=True,
        rules=[
            {"id": "us", "type": "force", "condition": {"country": "US"}, "variation": "on"},
            {"id": "staff", "type": "force", "segment": "staff", "variation": "on"},
            {"id": "half", "type": "rollout", "weights": {"on": 0.5, "off": 0.5}},
        ],
    )
    flag_create(
        project=project,
        key="nav-extras",
        name="Extras",
        prerequisites=[{"flag": "nav", "variations": ["on"]}],
        default_variation="on",
    )
    configure(project, "nav-extras", enabled=True)
    flag_create(
        project=project,
        key="checkout",
        name="Checkout",
        type="json",
        variations=[{"key": "control", "value": {"v": 1}}, {"key": "treatment", "value": {"v": 2}}],
    )
    configure(
        project,
        "checkout",
        enabled=True,
        rules=[{"id": "ab", "type": "experiment", "experiment": "checkout-v2"}],
    )
    flag_create(project=project, key="old", name="Archived")
    flag_update(flag=project.flags.get(key="old"), archived=True)
    flag_create(project=project, key="staging-only", name="On in staging")
    configure(project, "staging-only", environment="staging", enabled=True, default_variation="on")


def test_every_served_flag_with_value_variation_reason_and_rule(project, flags):
    r = evaluate(client_for(project), {"unit_id": "u1", "attributes": {"country": "US"}})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["environment"] == "production" and body["unknown"] == []
    answers = body["flags"]
    assert set(answers) == {"kill", "theme", "nav", "nav-extras", "checkout", "staging-only"}
    assert answers["kill"] == {"value": False, "variation": "off", "reason": "off", "rule_id": None}
    assert answers["theme"] == {
        "value": "dark",
        "variation": "dark",
        "reason": "default",
        "rule_id": None,
    }
    assert answers["nav"] == {"value": True, "variation": "on", "reason": "rule", "rule_id": "us"}
    assert answers["nav-extras"]["reason"] == "default"
    assert answers["checkout"]["reason"] == "experiment"
    assert answers["checkout"]["experiment"] == "checkout-v2"
    assert answers["checkout"]["rule_id"] == "ab"
    variation = answers["checkout"]["variation"]
    assert answers["checkout"]["value"] == {"control": {"v": 1}, "treatment": {"v": 2}}[variation]


def test_each_reason_is_reachable(project, flags):
    client = client_for(project)
    seen = {}
    for unit in ["staff-1", *(f"u{i}" for i in range(60))]:
        answers = evaluate(client, {"unit_id": unit}).json()["flags"]
        for key, answer in answers.items():
            assert answer["reason"] in REASONS
            seen.setdefault(answer["reason"], set()).add(key)
    assert set(seen) == REASONS
    assert seen["rule"] == {"nav"}  # staff-1 is in the segment
    assert seen["rollout"] == {"nav"}  # no country: the rollout decides the others
    assert "nav-extras" in seen["prerequisite"]  # nav off for about half the units


def test_id_attribute_defaults_to_the_unit_id_and_an_explicit_one_wins(project, flags):
    client = client_for(project)
    staff = evaluate(client, {"unit_id": "staff-1", "flags": ["nav"]}).json()["flags"]["nav"]
    assert (staff["reason"], staff["rule_id"]) == ("rule", "staff")
    body = {"unit_id": "someone", "attributes": {"id": "staff-1"}, "flags": ["nav"]}
    assert evaluate(client, body).json()["flags"]["nav"]["rule_id"] == "staff"
    body = {"unit_id": "staff-1", "attributes": {"id": "x"}, "flags": ["nav"]}
    assert evaluate(client, body).json()["flags"]["nav"]["rule_id"] != "staff"


def test_asked_flags_only_with_archived_and_unknown_keys_listed(project, flags):
    body = {"unit_id": "u1", "flags": ["theme", "old", "nope", "theme", "kill"]}
    r = evaluate(client_for(project), body)
    assert r.status_code == 200
    assert list(r.json()["flags"]) == ["theme", "kill"]
    assert r.json()["unknown"] == ["old", "nope"]


def test_the_keys_environment_is_evaluated_unless_the_body_names_another(project, flags):
    staging = client_for(project, "staging")
    r = evaluate(staging, {"unit_id": "u1", "flags": ["staging-only", "checkout"]})
    assert r.json()["environment"] == "staging"
    assert r.json()["flags"]["staging-only"]["reason"] == "default"
    # Experiment rules live in production only: staging serves checkout's off variation.
    assert r.json()["flags"]["checkout"]["reason"] == "off"
    production = client_for(project)
    body = {"unit_id": "u1", "flags": ["staging-only"]}
    assert evaluate(production, body).json()["flags"]["staging-only"]["reason"] == "off"
    r = evaluate(production, {**body, "environment": "staging"})
    assert r.json()["environment"] == "staging"
    assert r.json()["flags"]["staging-only"]["reason"] == "default"


def test_an_environment_of_another_project_is_refused(project, flags, admin_user):
    project_create(slug="other", name="Other", owner=admin_user)
    r = evaluate(client_for(project), {"unit_id": "u1", "environment": "qa"})
    assert r.status_code == 400 and r.json()["field"] == "environment"
    assert "no environment 'qa'" in r.json()["detail"]


@pytest.mark.parametrize(
    ("scopes", "status"),
    [(["evaluate"], 200), (["assign"], 200), (["ingest", "read"], 403)],
)
def test_evaluate_or_assign_scope_is_required(project, flags, scopes, status):
    assert evaluate(client_for(project, scopes=scopes), {"unit_id": "u1"}).status_code == status


def test_without_a_key_it_is_unauthorized(project, flags):
    assert evaluate(APIClient(), {"unit_id": "u1"}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"attributes": {}}, "unit_id"),
        ({"unit_id": ""}, "unit_id"),
        ({"unit_id": "u" * 201}, "unit_id"),
        ({"unit_id": "u1", "attributes": [1]}, "attributes"),
        ({"unit_id": "u1", "flags": "nav"}, "flags"),
        ({"unit_id": "u1", "flags": ["nav", 3]}, "flags[1]"),
        ({"unit_id": "u1", "flags": ["nav", ""]}, "flags[1]"),
        ({"unit_id": "u1", "flags": ["f"] * (MAX_EVALUATE_FLAGS + 1)}, "flags"),
        ({"unit_id": "u1", "track": "yes"}, "track"),
        ({"unit_id": "u1", "environment": 7}, "environment"),
    ],
)
def test_bad_bodies_are_a_400_naming_the_field(project, flags, body, field):
    r = evaluate(client_for(project), body)
    assert r.status_code == 400, r.content
    assert field in r.json(), r.json()


def test_a_body_that_is_not_json_is_a_400(project, flags):
    r = client_for(project).post("/api/v1/evaluate", "{", content_type="application/json")
    assert r.status_code == 400 and r.json()["field"] == "body"


def test_every_evaluation_is_counted_per_flag_variation_and_environment(project, flags):
    client = client_for(project)
    for _ in range(3):
        evaluate(client, {"unit_id": "u1", "attributes": {"country": "US"}, "flags": ["nav"]})
    evaluate(client_for(project, "staging"), {"unit_id": "u1", "flags": ["nav", "theme"]})
    assert not FlagUsage.objects.exists()  # buffered in the process until the next flush
    assert flag_usage_flush() == 3
    usage = {
        (u.flag.key, u.environment.key, u.variation): u.count
        for u in FlagUsage.objects.select_related("flag", "environment")
    }
    assert usage == {
        ("nav", "production", "on"): 3,
        ("nav", "staging", "off"): 1,
        ("theme", "staging", "light"): 1,
    }
    assert not FlagExposure.objects.exists()  # not tracked


def test_tracked_evaluations_store_one_exposure_per_flag_once(project, flags):
    client = client_for(project)
    body = {"unit_id": "u1", "attributes": {"country": "US"}, "flags": ["nav", "kill"]}
    for _ in range(2):  # a retry within the minute
        assert evaluate(client, {**body, "track": True}).status_code == 200
    stored = sorted(FlagExposure.objects.values_list("flag__key", "variation", "unit_id"))
    assert stored == [("kill", "off", "u1"), ("nav", "on", "u1")]
    assert {e.environment.key for e in FlagExposure.objects.all()} == {"production"}
    flag_usage_flush()
    assert FlagUsage.objects.get(flag__key="nav").count == 2  # every evaluation counts


def test_a_tracked_exposure_id_is_not_reused_by_events(project, flags):
    """Tracked exposures share the project's event-id space with posted events."""
    evaluate(client_for(project), {"unit_id": "u1", "flags": ["kill"], "track": True})
    event_id = FlagExposure.objects.get().event_id
    ingest = client_for(project, scopes=("ingest",))
    metric = {
        "event_id": event_id,
        "type": "metric",
        "name": "buy",
        "unit_id": "u1",
        "timestamp": "2026-11-29T10:00:00Z",
    }
    r = ingest.post("/api/v1/events", {"events": [metric]}, format="json")
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)


def test_constant_number_of_queries_and_no_write_untracked(
    project, flags, django_assert_num_queries, settings
):
    """Once the key and the flags are cached (core/cache.py), an untracked evaluation asks the
    database nothing (the counts are buffered) and a tracked one writes its exposures in one
    statement (on PostgreSQL a WITH that takes the ids in the event-id ledger first)."""
    settings.ABACUS_SERVING_RECHECK_SECONDS = 600  # only a change may send it to the database
    client = client_for(project)
    evaluate(client, {"unit_id": "warm"})  # builds the cached specs, touches the key
    with django_assert_num_queries(0):
        assert evaluate(client, {"unit_id": "u1"}).status_code == 200
    with django_assert_num_queries(1) as context:  # the exposures
        assert evaluate(client, {"unit_id": "u2", "track": True}).status_code == 200
    assert "INSERT INTO assignments_flagexposure" in context.captured_queries[0]["sql"]


def test_the_sdk_on_the_same_payload_serves_what_evaluate_serves(project, flags):
    """300 units with random attributes: for every flag, the value the growthbook SDK computes
    from the environment's /api/features payload equals /evaluate's."""
    environment = Environment.objects.get(project=project, key="production")
    payload = APIClient().get(f"/api/features/{environment.client_key}").json()
    gb = GrowthBook(attributes={}, features=payload["features"])
    client = client_for(project)
    rng = random.Random(7)
    reasons = set()
    for i in range(300):
        attributes = {"country": rng.choice(["US", "DE", None])}
        unit = "staff-1" if i == 0 else f"unit-{rng.getrandbits(48):x}"
        answers = evaluate(client, {"unit_id": unit, "attributes": attributes}).json()["flags"]
        gb.set_attributes({**attributes, "id": unit})
        for key, answer in answers.items():
            sdk = gb.eval_feature(key)
            same = json.dumps(sdk.value, sort_keys=True) == json.dumps(
                answer["value"], sort_keys=True
            )
            assert same, (key, unit, attributes, answer, sdk.to_dict())
            if answer["reason"] == "experiment":
                assert sdk.experimentResult.key == answer["variation"]
            reasons.add(answer["reason"])
    assert reasons == REASONS


def test_the_schema_types_the_answer(tmp_path):
    from tests.assignments.test_api_schema import dumped_schema, resolve, response_object

    schema = dumped_schema(tmp_path)
    body = response_object(schema, "/api/v1/evaluate/", "post", "200")
    assert {"environment", "flags", "unknown"} <= set(body["properties"])
    per_flag = resolve(schema, body["properties"]["flags"]["additionalProperties"])
    assert {"value", "variation", "reason", "rule_id"} <= set(per_flag["properties"])


@pytest.mark.django_db(transaction=True)
def test_the_flusher_thread_writes_the_counts_within_the_interval(
    project, flags, settings, usage_counts_buffer
):
    """With its thread on (as in every server process), the buffer is written on its own
    connection every ABACUS_USAGE_FLUSH_SECONDS, committed for the next reader."""
    settings.ABACUS_USAGE_FLUSH_SECONDS = 0.2
    usage_counts_buffer.background = True
    client = client_for(project)
    for _ in range(2):
        evaluate(client, {"unit_id": "u1", "attributes": {"country": "US"}, "flags": ["nav"]})
    deadline = time.monotonic() + 10
    while not FlagUsage.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert FlagUsage.objects.get(flag__key="nav", environment__key="production").count == 2
    assert usage_counts_buffer.pending() == {}
