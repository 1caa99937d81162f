"""The official GrowthBook SDK, evaluating the flags payload locally, serves every unit what the
server's `evaluate_flags` serves: the SDK (growthbook 4.x) is the oracle.

One payload holds flags of every rule kind (force on a condition, force on a segment with include
and exclude lists, rollouts over two and three variations behind a condition, hashed by a string
and by a numeric attribute, a running experiment with coverage < 1, targeting and a namespace,
a paused one, a concluded experiment's shipped variant, prerequisites met, unmet, on a JSON flag,
on an off flag, on an archived flag, on a cycle, an off flag, a default-only flag; boolean,
string, number and JSON values), next to the experiments themselves. For each unit the value,
the reason (mapped onto the SDK's ``source`` and rule id) and, for experiment rules, the variant
key must agree.
"""

import json
import logging
import random
import time

import pytest
from growthbook import GrowthBook

from bucketing.flags import (
    REASONS,
    FlagSpec,
    Prerequisite,
    RuleSpec,
    SegmentSpec,
    Variation,
    evaluate_flags,
)
from bucketing.payload import ExperimentSpec, VariantSpec, build_payload

ON_OFF = (Variation("on", True), Variation("off", False))

CHECKOUT = ExperimentSpec(
    key="checkout",
    seed="checkout-7",
    hash_attribute="id",
    coverage=0.6,
    variants=(
        VariantSpec("control", 1, "old", is_control=True),
        VariantSpec("treatment", 1, "new"),
    ),
    condition={"country": {"$in": ["US", "CA"]}},
    phase=1,
)
SEARCH = ExperimentSpec(
    key="search",
    seed="search-1",
    hash_attribute="device_id",
    coverage=0.9,
    variants=(
        VariantSpec("control", 0.5, 0, is_control=True),
        VariantSpec("fast", 0.3, 1),
        VariantSpec("fastest", 0.2, 2),
    ),
    namespace=("search", 0.0, 0.7),
)
PRICING = ExperimentSpec(
    key="pricing",
    seed="pricing",
    hash_attribute="id",
    coverage=1.0,
    variants=(VariantSpec("control", 1, 10, is_control=True), VariantSpec("cheap", 1, 8)),
    condition={"plan": "pro"},
    status="concluded",
    shipped_variant="cheap",
)
PAUSED = ExperimentSpec(
    key="paused-test",
    seed="p",
    hash_attribute="id",
    coverage=1.0,
    variants=(VariantSpec("control", 1, 0, is_control=True), VariantSpec("fast", 1, 1)),
    status="paused",
)

STAFF = SegmentSpec(
    key="staff",
    condition={"email": {"$regex": "@acme\\.com$"}},
    include=tuple(f"user-{i}" for i in range(0, 100_000, 97)),
    exclude=tuple(f"user-{i}" for i in range(0, 100_000, 89)),
)
BETA = SegmentSpec(key="beta", include=tuple(f"user-{i}" for i in range(0, 100_000, 13)))


def _flag(key, *rules, type="boolean", variations=ON_OFF, off="off", default="off", **more):
    return FlagSpec(
        key=key,
        type=type,
        variations=variations,
        off_variation=off,
        seed=more.pop("seed", f"{key}-seed"),
        enabled=more.pop("enabled", True),
        default_variation=default,
        rules=rules,
        **more,
    )


def _prerequisite(flag, *variations):
    return (Prerequisite(flag, variations),)


ABC = (Variation("a", "alpha"), Variation("b", "beta"), Variation("c", "gamma"))

FLAGS = [
    _flag("kill-switch", RuleSpec("all", "force", variation="on"), enabled=False, default="on"),
    _flag("plain", type="string", variations=ABC, off="a", default="b"),
    _flag(
        "banner",
        RuleSpec("pros", "force", condition={"plan": "pro", "age": {"$gte": 18}}, variation="on"),
        RuleSpec("staff", "force", segment=STAFF, variation="on"),
        RuleSpec("beta-de", "force", condition={"country": "DE"}, segment=BETA, variation="on"),
    ),
    _flag(
        "rollout-2",
        RuleSpec(
            "r", "rollout", condition={"country": {"$ne": "DE"}}, weights={"on": 0.25, "off": 0.75}
        ),
        seed="",  # the SDKs fall back to the feature key
    ),
    _flag(
        "rollout-3",
        RuleSpec("staff", "force", segment=STAFF, condition={"plan": "pro"}, variation="c"),
        RuleSpec(
            "r",
            "rollout",
            condition={"version": {"$vgte": "2.0.0"}},
            hash_attribute="device_id",
            weights={"a": 0.2, "b": 0.3, "c": 0.5},
        ),
        type="string",
        variations=ABC,
        off="a",
        default="a",
    ),
    _flag(
        "by-account",
        RuleSpec("r", "rollout", hash_attribute="account", weights={"low": 0.1, "high": 0.9}),
        type="number",
        variations=(Variation("low", 0.5), Variation("high", 2)),
        off="low",
        default="low",
    ),
    _flag(
        "checkout-ui",
        RuleSpec("exp", "experiment", experiment=CHECKOUT),
        RuleSpec("us", "force", condition={"country": "US"}, variation="treatment"),
        type="json",
        variations=(
            Variation("control", {"layout": "old", "steps": 3}),
            Variation("treatment", {"layout": "new", "steps": [1, 2]}),
        ),
        off="control",
        default="control",
    ),
    _flag(
        "search-speed",
        RuleSpec("paused", "experiment", experiment=PAUSED),
        RuleSpec("exp", "experiment", condition={"plan": {"$ne": "banned"}}, experiment=SEARCH),
        type="number",
        variations=(Variation("control", 0), Variation("fast", 10), Variation("fastest", 20)),
        off="control",
        default="control",
    ),
    _flag(
        "price",
        RuleSpec("shipped", "experiment", experiment=PRICING),
        type="number",
        variations=(Variation("control", 10), Variation("cheap", 8)),
        off="control",
        default="control",
    ),
    _flag(
        "banner-extra",
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("banner", "on"),
    ),
    _flag(
        "deep",
        RuleSpec("r", "rollout", weights={"on": 0.5, "off": 0.5}),
        prerequisites=(Prerequisite("banner-extra", ("on",)), Prerequisite("rollout-2", ("on",))),
    ),
    _flag(
        "needs-new-checkout",  # a JSON parent: compared by equality, not $nin
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("checkout-ui", "treatment"),
    ),
    _flag(
        "needs-killed",
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("kill-switch", "on"),
    ),
    _flag(
        "needs-archived",
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("archived", "on"),
    ),
    _flag(
        "loop-a",
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("loop-b", "on"),
    ),
    _flag(
        "loop-b",
        RuleSpec("all", "force", variation="on"),
        prerequisites=_prerequisite("loop-a", "on"),
    ),
]
SPECS = {f.key: f for f in FLAGS}
EXPERIMENTS = [CHECKOUT, SEARCH, PRICING]

# What decides for each flag, over the units (so a rule that never fires cannot pass unnoticed).
EXPECTED_REASONS = {
    "kill-switch": {"off"},
    "plain": {"default"},
    "banner": {"rule:pros", "rule:staff", "rule:beta-de", "default"},
    "rollout-2": {"rollout:r", "default"},
    "rollout-3": {"rule:staff", "rollout:r", "default"},
    "by-account": {"rollout:r", "default"},
    "checkout-ui": {"experiment:exp", "rule:us", "default"},
    "search-speed": {"experiment:exp", "default"},  # the paused experiment's rule never serves
    "price": {"rule:shipped", "default"},
    "banner-extra": {"prerequisite", "rule:all"},
    "deep": {"prerequisite", "rollout:r"},  # a unit without an id fails rollout-2 first
    "needs-new-checkout": {"prerequisite", "rule:all"},
    "needs-killed": {"prerequisite"},
    "needs-archived": {"prerequisite"},
    "loop-a": {"prerequisite"},
    "loop-b": {"prerequisite"},
}


def _units(count: int, seed: int = 14) -> list[dict]:
    rng = random.Random(seed)
    units = []
    for i in range(count):
        attrs: dict = {"id": f"user-{i}"}
        roll = rng.random()
        if roll < 0.03:
            del attrs["id"]
        elif roll < 0.04:
            attrs["id"] = ""
        elif roll < 0.06:
            attrs["id"] = rng.choice([i, i + 0.5, True, 0, None])
        if rng.random() < 0.9:
            attrs["device_id"] = f"dev-{rng.getrandbits(40):x}"
        attrs["country"] = rng.choice(["US", "CA", "DE", "FR", None])
        attrs["plan"] = rng.choice(["free", "pro", "banned"])
        attrs["age"] = rng.choice([16, 18, 40, "40", None])
        attrs["version"] = rng.choice(["1.9.9", "2.0.0", "2.10.1", "10.0"])
        attrs["account"] = rng.choice(
            [i + 1, (i + 1) * 1.25, 1e21 + i, 0, False, "acct-" + str(i), None]
        )
        if rng.random() < 0.15:
            attrs["email"] = f"{i}@{rng.choice(['acme.com', 'gmail.com'])}"
        units.append(attrs)
    return units


def _same(a, b) -> bool:
    """Equal as JSON (True is not 1, 2 is 2.0 as numbers)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_agrees(key, result, sdk) -> None:
    assert _same(sdk.value, result.value), (key, sdk.value, result)
    if result.reason in ("off", "default"):
        assert sdk.source == "defaultValue" and sdk.ruleId in (None, "")
    elif result.reason == "experiment":
        assert sdk.source == "experiment" and sdk.ruleId == result.rule_id
        assert sdk.experimentResult.key == result.variation
        assert sdk.experiment.key == result.experiment
    else:
        assert sdk.source == "force"
        if result.reason == "prerequisite":
            assert sdk.ruleId == f"{key}:prerequisite:{result.extra['prerequisite']}"
        elif result.reason == "rollout":
            assert sdk.ruleId == f"{result.rule_id}:{result.variation}"
        else:
            assert sdk.ruleId == result.rule_id


def _run(count: int) -> dict[str, set[str]]:
    payload = json.loads(json.dumps(build_payload(EXPERIMENTS, flags=FLAGS)))  # as over HTTP
    gb = GrowthBook(attributes={}, features=payload["features"])
    seen: dict[str, set[str]] = {key: set() for key in SPECS}
    for attrs in _units(count):
        gb.set_attributes(attrs)
        for key, result in evaluate_flags(SPECS, attrs).items():
            sdk = gb.eval_feature(key)
            try:
                _check_agrees(key, result, sdk)
            except AssertionError as e:
                raise AssertionError(
                    f"{key} for {attrs}: server {result}, SDK {sdk.to_dict()}"
                ) from e
            seen[key].add(f"{result.reason}:{result.rule_id}" if result.rule_id else result.reason)
    return seen


def _assert_every_rule_fires(seen: dict[str, set[str]]) -> None:
    assert seen == EXPECTED_REASONS
    assert {reason.split(":")[0] for reasons in seen.values() for reason in reasons} == set(REASONS)


def test_sdk_serves_what_the_server_serves_for_10k_units():
    logging.getLogger("growthbook").setLevel(logging.ERROR)
    started = time.perf_counter()
    _assert_every_rule_fires(_run(10_000))
    assert time.perf_counter() - started < 60


def test_the_units_exercise_both_segment_lists():
    """Some units reach the staff rule only through the include list, and some whose e-mail
    matches are kept out by the exclude list: the oracle run covers both."""
    excluded = set(STAFF.exclude)
    by_include = by_exclude = 0
    for attrs in _units(10_000):
        acme = attrs.get("email", "").endswith("@acme.com")
        result = evaluate_flags(SPECS, attrs, ["banner"])["banner"]
        by_include += result.rule_id == "staff" and not acme
        by_exclude += acme and attrs.get("id") in excluded and result.rule_id != "staff"
    assert by_include > 0 and by_exclude > 0


@pytest.mark.slow  # 100k units x 16 flags against the SDK: `make test` and CI run it
def test_sdk_serves_what_the_server_serves_for_100k_units():
    logging.getLogger("growthbook").setLevel(logging.ERROR)
    _assert_every_rule_fires(_run(100_000))


def test_payload_carries_every_rule_kind():
    """The payload the oracle reads has the shapes the module promises."""
    features = build_payload(EXPERIMENTS, flags=FLAGS)["features"]
    assert features["kill-switch"] == {"defaultValue": False, "rules": []}
    assert [r["id"] for r in features["rollout-3"]["rules"]] == ["staff", "r:a", "r:b", "r:c"]
    assert features["rollout-2"]["rules"][0]["seed"] == "rollout-2"
    exp_rule = features["checkout-ui"]["rules"][0]
    assert exp_rule["key"] == "checkout" and exp_rule["coverage"] == 0.6
    assert exp_rule["variations"] == [
        {"layout": "old", "steps": 3},
        {"layout": "new", "steps": [1, 2]},
    ]
    assert [r["id"] for r in features["search-speed"]["rules"]] == ["exp"]  # paused: no rule
    assert features["price"]["rules"] == [
        {"id": "shipped", "condition": {"plan": "pro"}, "force": 8}
    ]
    assert features["deep"]["rules"][0]["parentConditions"] == [
        {"id": "banner-extra", "condition": {"value": {"$nin": [True]}}}
    ]
    assert features["needs-archived"]["rules"][0] == {
        "id": "needs-archived:prerequisite:archived",
        "force": False,
    }
