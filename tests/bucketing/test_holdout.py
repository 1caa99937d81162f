"""The project holdout in the pure layer: membership by the holdout's own hash, independent of
experiment bucketing; the payload's filters, which the official GrowthBook SDK (the oracle)
evaluates to the server's answer for experiments, shipped experiments and every flag rule kind,
for units in and out of the holdout."""

import json
import logging
import math
import random
from dataclasses import replace

import numpy as np
import pytest
from growthbook import GrowthBook
from scipy import stats

from bucketing.flags import FlagSpec, RuleSpec, Variation, evaluate_flag, evaluate_flags
from bucketing.hashing import gb_hash
from bucketing.holdout import (
    GENERAL,
    HOLDOUT,
    HoldoutSpec,
    arm,
    arms_many,
    filters_out,
    holdout_filter,
)
from bucketing.payload import (
    ExperimentSpec,
    VariantSpec,
    build_payload,
    evaluate,
    evaluate_many,
    feature_definition,
)
from tests.bucketing.test_flags_sdk_oracle import EXPERIMENTS, FLAGS, _check_agrees, _same, _units

HOLDOUT_SPEC = HoldoutSpec(seed="holdout-2026", share=0.1)


def _ids(count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [f"u-{rng.getrandbits(64):x}" for _ in range(count)]


def test_membership_is_the_holdouts_own_hash_below_the_share():
    """A unit is in the holdout exactly when gb_hash(seed, unit, 2) < share (the SDKs' hash),
    the general sample is the next slice of the same size, and the vectorised path agrees."""
    ids = _ids(3000)
    for unit, got in zip(ids, arms_many(HOLDOUT_SPEC, ids), strict=True):
        n = gb_hash("holdout-2026", unit, 2)
        expected = HOLDOUT if n < 0.1 else GENERAL if n < 0.2 else None
        assert got == expected == arm(HOLDOUT_SPEC, unit)
    assert arm(HOLDOUT_SPEC, "") is None


def test_the_holdout_takes_its_share_of_units():
    """Over 200,000 ids the holdout and the general sample each hold 10% (binomial test)."""
    ids = _ids(200_000)
    arms = arms_many(HOLDOUT_SPEC, ids)
    for name in (HOLDOUT, GENERAL):
        count = sum(a == name for a in arms)
        assert stats.binomtest(count, len(ids), 0.1).pvalue > 1e-3, (name, count)


def test_membership_is_independent_of_experiment_bucketing():
    """Holdout membership and an experiment's variant (own seed) are independent: a chi-square
    test of the 2 x 3 table does not reject, so the holdout takes the same share of each arm."""
    exp = ExperimentSpec(
        key="e",
        seed="exp-seed",
        hash_attribute="id",
        coverage=1.0,
        variants=(VariantSpec("a", 1), VariantSpec("b", 1), VariantSpec("c", 2)),
    )
    ids = _ids(120_000, seed=9)
    variants = evaluate_many(exp, [{"id": u} for u in ids])
    held = arms_many(HOLDOUT_SPEC, ids)
    table = np.zeros((2, 3))
    for v, a in zip(variants, held, strict=True):
        table[int(a == HOLDOUT), "abc".index(v)] += 1
    assert stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("share", [0, -0.1, 0.51, math.nan, True, "0.1"])
def test_unusable_shares_are_refused(share):
    with pytest.raises(ValueError, match="share"):
        HoldoutSpec(seed="s", share=share)


def test_an_empty_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        HoldoutSpec(seed="", share=0.1)


def test_units_without_a_hash_value_are_filtered_out_like_the_sdks_do():
    """isFilteredOut: no hashable value (missing, empty, 0, a boolean) means filtered out."""
    for attrs in ({}, {"id": ""}, {"id": 0}, {"id": True}, {"id": None}):
        assert filters_out(HOLDOUT_SPEC, attrs, "id")
    assert holdout_filter(HOLDOUT_SPEC, "device") == {
        "attribute": "device",
        "seed": "holdout-2026",
        "hashVersion": 2,
        "ranges": [[0.1, 1.0]],
    }


RUNNING = ExperimentSpec(
    key="layered",
    seed="c-1",
    hash_attribute="id",
    coverage=0.8,
    variants=(VariantSpec("control", 1, "old", is_control=True), VariantSpec("new", 1, "new")),
    namespace=("ns", 0.0, 0.6),
    holdout=HOLDOUT_SPEC,
)


def test_a_running_experiment_never_serves_a_holdout_unit():
    ids = _ids(5000)
    held = [u for u, a in zip(ids, arms_many(HOLDOUT_SPEC, ids), strict=True) if a == HOLDOUT]
    assert held and all(evaluate(RUNNING, {"id": u}) is None for u in held)
    assert all(v is None for v in evaluate_many(RUNNING, [{"id": u} for u in held * 60]))
    served = [evaluate(RUNNING, {"id": u}) for u in ids]
    assert {"control", "new"} <= set(served)


def test_the_namespace_becomes_a_filter_next_to_the_holdouts():
    """SDKs read filters instead of a namespace, so both travel as filters."""
    rule = feature_definition(RUNNING)["rules"][0]
    assert rule["filters"] == [
        holdout_filter(HOLDOUT_SPEC, "id"),
        {"attribute": "id", "seed": "__ns", "hashVersion": 1, "ranges": [[0.0, 0.6]]},
    ]
    assert rule["namespace"] == ["ns", 0.0, 0.6]


def _with_holdout(items):
    return [replace(item, holdout=HOLDOUT_SPEC) for item in items]


NULL_SHIPPED = ExperimentSpec(
    key="null-shipped",
    seed="n",
    hash_attribute="id",
    coverage=1.0,
    variants=(VariantSpec("control", 1, "old", is_control=True), VariantSpec("gone", 1, None)),
    status="concluded",
    shipped_variant="gone",
)
NO_VALUES = ExperimentSpec(
    key="no-values",
    seed="v",
    hash_attribute="id",
    coverage=1.0,
    variants=(VariantSpec("control", 1, is_control=True), VariantSpec("b", 1)),
    status="concluded",
    shipped_variant="b",
)
EXPERIMENT_SPECS = _with_holdout([*EXPERIMENTS, RUNNING, NULL_SHIPPED, NO_VALUES])
FLAG_SPECS = {f.key: f for f in _with_holdout(FLAGS)}


def _hashed_attribute(flag: FlagSpec, rule_id: str) -> str | None:
    """The attribute a rollout, experiment or shipped-experiment rule hashes; None for a force."""
    rule = next(r for r in flag.rules if r.id == rule_id)
    if rule.type == "rollout":
        return rule.hash_attribute
    return rule.experiment.hash_attribute if rule.type == "experiment" else None


def _sdk_agrees_on_experiment(spec, attrs, sdk) -> str | None:
    """The SDK's answer for an experiment feature equals the server's variant (or value)."""
    key = evaluate(spec, attrs)
    if spec.status == "running":
        if key is None:
            assert sdk.source != "experiment" and _same(sdk.value, spec.control.value)
        else:
            assert sdk.source == "experiment" and sdk.experimentResult.key == key
        return key
    value = spec.variant(key).value if key is not None else spec.control.value
    assert _same(sdk.value, value), (spec.key, attrs, key, sdk.to_dict())
    return key


def _run(count: int) -> dict[str, int]:
    payload = json.loads(json.dumps(build_payload(EXPERIMENT_SPECS, flags=FLAG_SPECS.values())))
    gb = GrowthBook(attributes={}, features=payload["features"])
    seen = {"held units": 0, "held served by hashed rules": 0, "shipped held": 0}
    seen["hashed rules served"] = 0
    for attrs in _units(count, seed=21):
        gb.set_attributes(attrs)
        unit = attrs.get("id")
        held = isinstance(unit, str) and unit and HOLDOUT_SPEC.holds(unit)
        seen["held units"] += bool(held)
        for spec in EXPERIMENT_SPECS:
            key = _sdk_agrees_on_experiment(spec, attrs, gb.eval_feature(spec.key))
            if held and spec.hash_attribute == "id":
                assert key is None, (spec.key, attrs)
                seen["shipped held"] += spec.status == "concluded"
        for key, result in evaluate_flags(FLAG_SPECS, attrs).items():
            _check_agrees(key, result, gb.eval_feature(key))
            attribute = result.rule_id and _hashed_attribute(FLAG_SPECS[key], result.rule_id)
            if attribute:
                seen["held served by hashed rules"] += filters_out(HOLDOUT_SPEC, attrs, attribute)
                seen["hashed rules served"] += 1
    return seen


def test_the_sdk_agrees_with_the_server_in_and_out_of_the_holdout():
    """3,000 units (about 10% held out) over every experiment status
    and every flag rule kind from the flags oracle, now served with the holdout: the SDK's
    value, rule and variant equal the server's; no held-out unit gets an experiment, a shipped
    variant or a rollout hashed by an attribute that holds it out, while targeted force rules
    still reach them."""
    logging.getLogger("growthbook").setLevel(logging.ERROR)
    seen = _run(3000)
    assert 220 < seen["held units"] < 380
    assert seen["held served by hashed rules"] == 0
    assert seen["shipped held"] > 0 and seen["hashed rules served"] > 3000


def test_force_rules_still_reach_holdout_units_and_rollouts_do_not():
    flag = FlagSpec(
        key="f",
        type="boolean",
        variations=(Variation("on", True), Variation("off", False)),
        off_variation="off",
        seed="f",
        enabled=True,
        default_variation="off",
        rules=(
            RuleSpec("vip", "force", condition={"vip": True}, variation="on"),
            RuleSpec("all", "rollout", weights={"on": 1.0}),
        ),
        holdout=HOLDOUT_SPEC,
    )
    ids = _ids(2000)
    held = [u for u in ids if HOLDOUT_SPEC.holds(u)]
    for u in held:
        assert evaluate_flag(flag, {"id": u}, {}).reason == "default"
        assert evaluate_flag(flag, {"id": u, "vip": True}, {}).reason == "rule"
    free = [u for u in ids if not HOLDOUT_SPEC.holds(u)]
    assert all(evaluate_flag(flag, {"id": u}, {}).reason == "rollout" for u in free)
    assert not replace(flag, enabled=False, holdout=HOLDOUT_SPEC).enabled
