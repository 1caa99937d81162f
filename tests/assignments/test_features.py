"""The features payload makes the official GrowthBook SDK give the server's answer."""

import json
import random
import time

import pytest
from growthbook import GrowthBook

from bucketing.payload import (
    ExperimentSpec,
    VariantSpec,
    build_payload,
    etag,
    evaluate,
    evaluate_many,
    feature_definition,
    value_for,
)

UNITS = 100_000


def _two_arms(**overrides) -> ExperimentSpec:
    fields = dict(
        key="checkout-v2",
        seed="checkout-v2-seed",
        hash_attribute="id",
        coverage=1.0,
        variants=(
            VariantSpec("control", 0.5, {"layout": "old"}, is_control=True),
            VariantSpec("treatment", 0.5, {"layout": "new"}),
        ),
    )
    fields.update(overrides)
    return ExperimentSpec(**fields)


EXPERIMENTS = [
    _two_arms(),
    ExperimentSpec(
        key="pricing",
        seed="pricing-1",
        hash_attribute="id",
        coverage=0.3,
        variants=(
            VariantSpec("control", 0.2, 10, is_control=True),
            VariantSpec("cheap", 0.3, 8),
            VariantSpec("premium", 0.5, 12),
        ),
    ),
    ExperimentSpec(
        key="onboarding",
        seed="onb",
        hash_attribute="id",
        coverage=1.0,
        # Two arms share a value: only the variant key tells them apart.
        variants=(
            VariantSpec("control", 1, "classic", is_control=True),
            VariantSpec("tour", 1, "tour"),
            VariantSpec("tour-b", 1, "tour"),
        ),
        condition={"country": {"$in": ["US", "CA"]}, "age": {"$gte": 18}},
    ),
    ExperimentSpec(
        key="search-left",
        seed="",  # the SDK falls back to the key
        hash_attribute="device_id",
        coverage=0.8,
        variants=(VariantSpec("control", 50, False, True), VariantSpec("ranker", 50, True)),
        namespace=("search", 0.0, 0.5),
    ),
    ExperimentSpec(
        key="search-right",
        seed="sr",
        hash_attribute="device_id",
        coverage=1.0,
        variants=(VariantSpec("control", 0.7, "a", True), VariantSpec("b", 0.3, "b")),
        condition={"$or": [{"plan": "pro"}, {"tags": {"$elemMatch": {"$eq": "beta"}}}]},
        namespace=("search", 0.5, 1.0),
    ),
]


def _random_units(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    units = []
    for i in range(count):
        attrs: dict = {"id": f"{rng.getrandbits(96):024x}" if i % 10 else rng.randrange(1, 10**9)}
        if rng.random() < 0.9:
            attrs["device_id"] = f"dev-{rng.getrandbits(40)}"
        if rng.random() < 0.95:
            attrs["country"] = rng.choice(["US", "CA", "DE", "us"])
        attrs["age"] = rng.choice([16, 18, 30, 70, None, "30"])
        attrs["plan"] = rng.choice(["free", "pro"])
        attrs["tags"] = rng.sample(["beta", "vip", "new"], rng.randrange(0, 3))
        units.append(attrs)
    units.append({})  # no hash attribute at all
    units.append({"id": "", "device_id": 0})  # values that do not hash
    return units


def _sdk(payload: dict) -> GrowthBook:
    # Through JSON, as an SDK receives it over HTTP.
    return GrowthBook(attributes={}, features=json.loads(json.dumps(payload))["features"])


def _sdk_variant(gb: GrowthBook, key: str) -> tuple[str | None, object]:
    result = gb.eval_feature(key)
    exp = result.experimentResult
    in_experiment = result.source == "experiment" and exp is not None and exp.inExperiment
    return (exp.key if in_experiment else None), result.value


@pytest.mark.slow  # 100k units against the SDK: `make test` and CI run it, test-fast not
def test_sdk_local_evaluation_equals_server_for_100k_units():
    """For 100,000 random units and five experiments (3 arms, coverage 0.3 and 1.0, targeting,
    a namespace, numeric ids), the SDK's variant and value from the payload equal evaluate()."""
    payload = build_payload(EXPERIMENTS)
    gb = _sdk(payload)
    started = time.perf_counter()
    seen: dict[str, set] = {spec.key: set() for spec in EXPERIMENTS}
    for attrs in _random_units(UNITS):
        gb.set_attributes(attrs)
        for spec in EXPERIMENTS:
            expected = evaluate(spec, attrs)
            key, value = _sdk_variant(gb, spec.key)
            assert key == expected, (spec.key, attrs)
            assert value == value_for(spec, attrs)
            seen[spec.key].add(expected)
    assert time.perf_counter() - started < 60
    for spec in EXPERIMENTS:
        assert seen[spec.key] == {None} | {v.key for v in spec.variants}, spec.key


def test_namespace_keeps_experiments_exclusive():
    """Experiments in disjoint slices of one namespace never both include a unit."""
    left, right = EXPERIMENTS[3], EXPERIMENTS[4]
    for attrs in _random_units(20_000, seed=1):
        assert evaluate(left, attrs) is None or evaluate(right, attrs) is None


def test_evaluate_many_equals_evaluate():
    """The vectorised decision gives the same answers as the scalar one."""
    units = _random_units(5_000, seed=2)
    for spec in EXPERIMENTS:
        assert evaluate_many(spec, units) == [evaluate(spec, u) for u in units]
        assert evaluate_many(spec, units[:10]) == [evaluate(spec, u) for u in units[:10]]


@pytest.mark.parametrize("status", ["paused", "rolled_back", "concluded"])
def test_stopped_experiments_serve_control_to_everyone(status):
    """Paused, rolled back and undecided concluded experiments: control value, no assignment."""
    spec = _two_arms(status=status)
    assert feature_definition(spec) == {"defaultValue": {"layout": "old"}, "rules": []}
    gb = _sdk(build_payload([spec]))
    for attrs in _random_units(300, seed=3):
        gb.set_attributes(attrs)
        result = gb.eval_feature(spec.key)
        assert result.value == {"layout": "old"}
        assert result.source == "defaultValue"
        assert evaluate(spec, attrs) is None
        assert value_for(spec, attrs) == {"layout": "old"}


def test_shipped_variant_is_served_to_everyone():
    """A concluded experiment that shipped a variant gives its value to every unit via a force
    rule, with or without a hash attribute."""
    spec = _two_arms(status="concluded", shipped_variant="treatment")
    gb = _sdk(build_payload([spec]))
    for attrs in _random_units(300, seed=4):
        gb.set_attributes(attrs)
        result = gb.eval_feature(spec.key)
        assert result.value == {"layout": "new"}
        assert result.source == "force"
        assert evaluate(spec, attrs) == "treatment"
        assert value_for(spec, attrs) == {"layout": "new"}


def test_shipped_null_value_is_served_as_default():
    """A shipped variant whose value is null still reaches everyone (a null force is ignored)."""
    spec = _two_arms(
        status="concluded",
        shipped_variant="treatment",
        variants=(VariantSpec("control", 0.5, "on", True), VariantSpec("treatment", 0.5, None)),
    )
    gb = _sdk(build_payload([spec]))
    gb.set_attributes({"id": "u1"})
    assert gb.eval_feature(spec.key).value is None
    assert value_for(spec, {"id": "u1"}) is None


def test_running_experiment_becomes_an_experiment_rule():
    """The rule carries what SDKs need to bucket exactly like the server."""
    spec = EXPERIMENTS[3]
    rule = feature_definition(spec)["rules"][0]
    assert rule["key"] == "search-left"
    assert rule["seed"] == "search-left"
    assert rule["hashVersion"] == 2
    assert rule["hashAttribute"] == "device_id"
    assert rule["coverage"] == 0.8
    assert rule["weights"] == [0.5, 0.5]
    assert rule["variations"] == [False, True]
    assert rule["meta"] == [
        {"key": "control", "name": "control"},
        {"key": "ranker", "name": "ranker"},
    ]
    assert rule["namespace"] == ["search", 0.0, 0.5]
    assert rule["phase"] == "0"
    assert "condition" not in rule


def test_payload_shape_and_etag():
    """Drafts are not served; the ETag follows the content."""
    draft = _two_arms(key="draft-exp", status="draft")
    payload = build_payload([*EXPERIMENTS, draft], date_updated="2026-01-01T00:00:00Z")
    assert payload["status"] == 200
    assert payload["dateUpdated"] == "2026-01-01T00:00:00Z"
    assert sorted(payload["features"]) == sorted(s.key for s in EXPERIMENTS)
    assert payload["features"]["pricing"]["defaultValue"] == 10
    same = build_payload(list(reversed(EXPERIMENTS)), date_updated="2026-01-01T00:00:00Z")
    assert etag(same) == etag(payload)
    ramped = [_two_arms(coverage=0.5), *EXPERIMENTS[1:]]
    assert etag(build_payload(ramped, date_updated="2026-01-01T00:00:00Z")) != etag(payload)
    assert etag(payload).startswith('"') and etag(payload).endswith('"')


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="share the key"):
        build_payload([_two_arms(), _two_arms()])


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"status": "live"}, "unknown status"),
        ({"coverage": 1.5}, "coverage"),
        ({"variants": (VariantSpec("a", 1, 1),)}, "at least two variants"),
        ({"variants": (VariantSpec("a", 1, 1), VariantSpec("a", 1, 2))}, "unique"),
        ({"variants": (VariantSpec("a", -1, 1), VariantSpec("b", 1, 2))}, "non-negative"),
        ({"variants": (VariantSpec("a", 0, 1), VariantSpec("b", 0, 2))}, "all be zero"),
        ({"shipped_variant": "nope"}, "not a variant"),
        ({"namespace": ("ns", 0.6, 0.2)}, "namespace"),
        ({"condition": ["US"]}, "object"),
    ],
)
def test_inconsistent_specs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        _two_arms(**overrides)


def test_weights_are_normalised_for_sdk_and_server():
    """Relative weights (e.g. 1:1:2) are served as fractions summing to 1."""
    spec = ExperimentSpec(
        key="w",
        seed="w",
        hash_attribute="id",
        coverage=1.0,
        variants=(VariantSpec("a", 1, 1, True), VariantSpec("b", 1, 2), VariantSpec("c", 2, 3)),
    )
    assert spec.weights == (0.25, 0.25, 0.5)
    assert feature_definition(spec)["rules"][0]["weights"] == [0.25, 0.25, 0.5]


# --- /api/features/<client key>: one payload per environment ----------------------------------


@pytest.fixture
def served(project, metrics):
    """A running experiment and a boolean flag on (serving true) in production and staging."""
    from experiments.models import Environment
    from flags.services import flag_create, flag_toggle
    from tests.factories import running_experiment

    running_experiment(project)
    flag = flag_create(project=project, key="new-checkout", name="New", default_variation="on")
    environments = {e.key: e for e in Environment.objects.filter(project=project)}
    for key in ("production", "staging"):
        flag_toggle(flag=flag, environment=environments[key], enabled=True)
    return flag, environments


@pytest.mark.django_db
def test_production_serves_experiments_and_flags_under_the_old_project_key(client, project, served):
    """Production's client key is the project's old one: existing SDKs keep working and now
    also get the flags."""
    _, environments = served
    assert environments["production"].client_key == project.client_key
    payload = client.get(f"/api/features/{project.client_key}").json()
    assert set(payload["features"]) == {"checkout-v2", "new-checkout"}
    gb = _sdk(payload)
    gb.set_attributes({"id": "u1"})
    assert gb.eval_feature("new-checkout").value is True
    assert payload["features"]["checkout-v2"]["rules"][0]["key"] == "checkout-v2"
    assert gb.eval_feature("checkout-v2").value is not None


@pytest.mark.django_db
def test_other_environments_serve_their_flags_only(client, served):
    flag, environments = served
    staging = client.get(f"/api/features/{environments['staging'].client_key}").json()
    assert set(staging["features"]) == {"new-checkout"}
    assert staging["features"]["new-checkout"]["defaultValue"] is True
    development = client.get(f"/api/features/{environments['development'].client_key}").json()
    # Off in development: the off variation for everyone.
    assert development["features"] == {"new-checkout": {"defaultValue": False, "rules": []}}
    assert client.get("/api/features/sdk-no-such-key").status_code == 404


@pytest.mark.django_db
def test_etag_follows_the_environment_and_date_updated_the_latest_change(client, served):
    from flags.models import FlagEnvironment
    from flags.services import flag_toggle

    flag, environments = served
    url = f"/api/features/{environments['staging'].client_key}"
    first = client.get(url)
    assert first["Access-Control-Allow-Origin"] == "*"
    assert client.get(url, headers={"If-None-Match": first["ETag"]}).status_code == 304
    flag_toggle(flag=flag, environment=environments["staging"], enabled=False)
    second = client.get(url, headers={"If-None-Match": first["ETag"]})
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert second.json()["features"]["new-checkout"]["defaultValue"] is False
    config = FlagEnvironment.objects.get(flag=flag, environment=environments["staging"])
    stamp = config.updated_at.isoformat().replace("+00:00", "Z")
    assert second.json()["dateUpdated"] >= stamp
    assert client.get(url, headers={"If-None-Match": second["ETag"]}).status_code == 304


@pytest.mark.django_db
def test_a_served_payload_is_answered_from_the_process_caches(
    client, served, django_assert_num_queries, settings
):
    """Once served, the environment (by client key) and its payload ask the database nothing;
    a flag change is served at once (docs/operations.md section 19)."""
    settings.ABACUS_SERVING_RECHECK_SECONDS = 600  # only a change may send it to the database
    from flags.services import flag_toggle

    flag, environments = served
    url = f"/api/features/{environments['staging'].client_key}"
    client.get(url)
    with django_assert_num_queries(0):
        assert client.get(url).json()["features"]["new-checkout"]["defaultValue"] is True
    flag_toggle(flag=flag, environment=environments["staging"], enabled=False)
    assert client.get(url).json()["features"]["new-checkout"]["defaultValue"] is False
