"""Flags: what the server serves and why, and the GrowthBook feature each flag becomes."""

import pytest

from bucketing.flags import (
    MAX_PREREQUISITE_DEPTH,
    FlagResult,
    FlagSpec,
    Prerequisite,
    RuleSpec,
    SegmentSpec,
    Variation,
    evaluate_flag,
    evaluate_flags,
    flag_feature,
    segment_condition,
)
from bucketing.hashing import gb_hash
from bucketing.payload import (
    ExperimentSpec,
    VariantSpec,
    build_payload,
    evaluate,
    feature_definition,
)

ON_OFF = (Variation("on", True), Variation("off", False))
IDS = [f"user-{i}" for i in range(4000)]


def _flag(*rules, key="new-ui", enabled=True, default="off", prerequisites=(), **overrides):
    fields = dict(
        key=key,
        type="boolean",
        variations=ON_OFF,
        off_variation="off",
        seed=f"{key}-seed",
        enabled=enabled,
        default_variation=default,
        rules=rules,
        prerequisites=prerequisites,
    )
    fields.update(overrides)
    return FlagSpec(**fields)


def _eval(spec, attributes, flags=None):
    return evaluate_flag(spec, attributes, flags if flags is not None else {spec.key: spec})


def _experiment(**overrides) -> ExperimentSpec:
    fields = dict(
        key="checkout",
        seed="checkout-seed",
        hash_attribute="id",
        coverage=0.5,
        variants=(VariantSpec("off", 1, "a", is_control=True), VariantSpec("on", 1, "b")),
        condition={"country": "US"},
        phase=2,
    )
    fields.update(overrides)
    return ExperimentSpec(**fields)


# --- reasons -------------------------------------------------------------------------------


def test_off_flag_serves_the_off_variation_to_everyone_and_has_no_rules():
    spec = _flag(RuleSpec("r1", "force", variation="on"), enabled=False, default="on")
    result = _eval(spec, {"id": "u1"})
    assert (result.value, result.variation, result.reason, result.rule_id) == (
        False,
        "off",
        "off",
        None,
    )
    assert flag_feature(spec) == {"defaultValue": False, "rules": []}


def test_no_matching_rule_serves_the_default_variation():
    spec = _flag(RuleSpec("r1", "force", condition={"plan": "pro"}, variation="off"), default="on")
    result = _eval(spec, {"id": "u1", "plan": "free"})
    assert (result.value, result.variation, result.reason) == (True, "on", "default")
    assert flag_feature(spec)["defaultValue"] is True


def test_force_rule_serves_its_variation_to_matching_units_with_the_rule_id():
    spec = _flag(RuleSpec("staff", "force", condition={"plan": "pro"}, variation="on"))
    assert _eval(spec, {"id": "u1", "plan": "pro"}) == _result(True, "on", "rule", "staff")
    assert _eval(spec, {"id": "u1"}).reason == "default"
    assert flag_feature(spec)["rules"] == [
        {"id": "staff", "condition": {"plan": "pro"}, "force": True}
    ]


def _result(value, variation, reason, rule_id=None, experiment=None):
    return FlagResult(value, variation, reason, rule_id, experiment)


def test_first_matching_rule_wins():
    spec = _flag(
        RuleSpec("a", "force", condition={"plan": "pro"}, variation="on"),
        RuleSpec("b", "force", variation="off"),
        default="on",
    )
    assert _eval(spec, {"plan": "pro"}).rule_id == "a"
    assert _eval(spec, {"plan": "free"}).rule_id == "b"


# --- segments --------------------------------------------------------------------------------


def test_segment_without_condition_is_exactly_its_include_list():
    segment = SegmentSpec("beta", include=("u1", "u2"))
    spec = _flag(RuleSpec("r", "force", segment=segment, variation="on"))
    assert segment_condition(segment) == {"id": {"$in": ["u1", "u2"]}}
    assert segment_condition(SegmentSpec("s", condition={"plan": "pro"})) == {"plan": "pro"}
    assert _eval(spec, {"id": "u1"}).variation == "on"
    assert _eval(spec, {"id": "u3"}).variation == "off"
    assert _eval(spec, {}).variation == "off"
    # Ids compare as strings, like the SDKs' $in.
    assert _eval(_flag(RuleSpec("r", "force", segment=SegmentSpec("n", include=("7",)),
                                variation="on")), {"id": 7}).reason == "default"  # fmt: skip


def test_empty_segment_matches_nobody():
    spec = _flag(RuleSpec("r", "force", segment=SegmentSpec("empty", condition={}), variation="on"))
    assert _eval(spec, {"id": "u1"}).reason == "default"


def test_segment_condition_or_include_list_minus_exclude_list():
    segment = SegmentSpec(
        "staff", condition={"email": {"$regex": "@acme\\.com$"}}, include=("vip",), exclude=("bob",)
    )
    spec = _flag(RuleSpec("r", "force", segment=segment, variation="on"))
    assert _eval(spec, {"id": "ann", "email": "ann@acme.com"}).variation == "on"  # condition
    assert _eval(spec, {"id": "vip", "email": "vip@gmail.com"}).variation == "on"  # included
    assert _eval(spec, {"id": "eve", "email": "eve@gmail.com"}).variation == "off"
    assert _eval(spec, {"id": "bob", "email": "bob@acme.com"}).variation == "off"  # excluded
    assert segment_condition(segment) == {
        "$and": [
            {"$or": [{"id": {"$in": ["vip"]}}, {"email": {"$regex": "@acme\\.com$"}}]},
            {"id": {"$nin": ["bob"]}},
        ]
    }


def test_exclude_list_wins_over_include_list():
    segment = SegmentSpec("s", include=("u1",), exclude=("u1",))
    assert (
        _eval(_flag(RuleSpec("r", "force", segment=segment, variation="on")), {"id": "u1"}).reason
        == "default"
    )


def test_rule_condition_and_segment_must_both_match():
    segment = SegmentSpec("beta", include=("u1", "u2"))
    rule = RuleSpec("r", "force", condition={"country": "US"}, segment=segment, variation="on")
    spec = _flag(rule)
    assert flag_feature(spec)["rules"][0]["condition"] == {
        "$and": [{"country": "US"}, {"id": {"$in": ["u1", "u2"]}}]
    }
    assert _eval(spec, {"id": "u1", "country": "US"}).variation == "on"
    assert _eval(spec, {"id": "u1", "country": "DE"}).variation == "off"
    assert _eval(spec, {"id": "u3", "country": "US"}).variation == "off"


# --- rollouts --------------------------------------------------------------------------------


def _three():
    return (Variation("a", "A"), Variation("b", "B"), Variation("c", "C"))


def test_rollout_ranges_are_cumulative_in_variation_order_and_skip_empty_shares():
    rule = RuleSpec(
        "ro", "rollout", condition={"plan": "pro"}, weights=(("c", 0.8), ("a", 0.2), ("b", 0.0))
    )
    spec = _flag(rule, type="string", variations=_three(), off_variation="a", default="a")
    assert flag_feature(spec)["rules"] == [
        {
            "id": "ro:a",
            "condition": {"plan": "pro"},
            "force": "A",
            "hashAttribute": "id",
            "seed": "new-ui-seed",
            "hashVersion": 2,
            "range": [0.0, 0.2],
        },
        {
            "id": "ro:c",
            "condition": {"plan": "pro"},
            "force": "C",
            "hashAttribute": "id",
            "seed": "new-ui-seed",
            "hashVersion": 2,
            "range": [0.2, 1.0],
        },
    ]


def test_rollout_serves_the_variation_whose_slice_holds_the_units_hash():
    rule = RuleSpec("ro", "rollout", weights={"on": 0.3, "off": 0.7})
    spec = _flag(rule)
    seen = set()
    for uid in IDS[:500]:
        result = _eval(spec, {"id": uid})
        expected = "on" if gb_hash("new-ui-seed", uid, 2) < 0.3 else "off"
        assert (result.variation, result.reason, result.rule_id) == (expected, "rollout", "ro")
        seen.add(expected)
    assert seen == {"on", "off"}


@pytest.mark.parametrize("missing", [{}, {"id": ""}, {"id": None}, {"id": True}, {"id": 0}])
def test_rollout_skips_units_without_a_hashable_attribute(missing):
    spec = _flag(RuleSpec("ro", "rollout", weights={"on": 1.0}), default="off")
    assert _eval(spec, missing).reason == "default"


def test_rollout_hashes_numbers_like_javascript_strings():
    spec = _flag(RuleSpec("ro", "rollout", hash_attribute="n", weights={"on": 0.5, "off": 0.5}))
    for n, text in [(123, "123"), (1.5, "1.5"), (1e21, "1e+21"), (-7, "-7")]:
        assert _eval(spec, {"n": n}) == _eval(spec, {"n": text})


@pytest.mark.parametrize("on_first", [True, False])
def test_rollout_is_sticky_as_the_share_grows(on_first):
    """A unit served "on" at 10% is still served "on" at 20% and 50%, whether "on" is the flag's
    first variation (its slice grows up) or its last (its slice grows down)."""
    variations = ON_OFF if on_first else ON_OFF[::-1]

    def on_units(share):
        spec = _flag(RuleSpec("ro", "rollout", weights={"on": share, "off": 1 - share}),
                     variations=variations)  # fmt: skip
        return {u for u in IDS if _eval(spec, {"id": u}).variation == "on"}

    ten, twenty, half = on_units(0.1), on_units(0.2), on_units(0.5)
    assert ten <= twenty <= half
    assert 0.07 < len(ten) / len(IDS) < 0.13
    assert 0.17 < len(twenty) / len(IDS) < 0.23


@pytest.mark.parametrize(
    "weights,problem",
    [
        ({"on": 0.5, "off": 0.4}, "sum to 1"),
        ({"on": -0.5, "off": 1.5}, "finite"),
        ({"on": float("nan"), "off": 1}, "finite"),
        ({"on": True, "off": 0}, "finite"),
    ],
)
def test_rollout_shares_are_validated(weights, problem):
    with pytest.raises(ValueError, match=problem):
        RuleSpec("ro", "rollout", weights=weights)


def test_rollout_shares_within_tolerance_are_accepted_and_close_the_range():
    rule = RuleSpec("ro", "rollout", weights={"on": 0.1, "off": 0.9 - 1e-10})
    assert flag_feature(_flag(rule))["rules"][-1]["range"] == [0.1, 1.0]


# --- experiment rules -------------------------------------------------------------------------


def test_experiment_rule_mirrors_the_experiment_feature_with_the_flags_values():
    exp = _experiment(namespace=("checkout", 0.0, 0.8))
    spec = _flag(RuleSpec("exp", "experiment", experiment=exp))
    (rule,) = flag_feature(spec)["rules"]
    expected = dict(feature_definition(exp)["rules"][0], id="exp", variations=[False, True])
    assert rule == expected
    assert rule["key"] == "checkout" and rule["seed"] == "checkout-seed"
    assert rule["coverage"] == 0.5 and rule["condition"] == {"country": "US"}


def test_experiment_rule_serves_included_units_and_lets_excluded_ones_fall_through():
    exp = _experiment()
    spec = _flag(
        RuleSpec("exp", "experiment", experiment=exp),
        RuleSpec("rest", "force", variation="on"),
    )
    reasons = set()
    for uid in IDS[:1000]:
        attrs = {"id": uid, "country": "US" if uid[-1] in "02468" else "DE"}
        result = _eval(spec, attrs)
        variant = evaluate(exp, attrs)
        if variant is None:
            assert (result.reason, result.rule_id, result.variation) == ("rule", "rest", "on")
        else:
            assert (result.reason, result.rule_id, result.experiment) == (
                "experiment",
                "exp",
                "checkout",
            )
            assert result.variation == variant
            assert result.value is (variant == "on")
        reasons.add(result.reason)
    assert reasons == {"rule", "experiment"}


def test_concluded_experiment_forces_the_shipped_variation_on_its_targeting():
    exp = _experiment(status="concluded", shipped_variant="on")
    spec = _flag(RuleSpec("exp", "experiment", experiment=exp))
    assert flag_feature(spec)["rules"] == [
        {"id": "exp", "condition": {"country": "US"}, "force": True}
    ]
    assert _eval(spec, {"id": "u", "country": "US"}) == _result(True, "on", "rule", "exp")
    assert _eval(spec, {"id": "u", "country": "DE"}).reason == "default"


@pytest.mark.parametrize(
    "status,shipped",
    [("paused", None), ("rolled_back", None), ("concluded", None), ("draft", None)],
)
def test_experiment_rule_is_skipped_unless_running_or_shipped(status, shipped):
    spec = _flag(RuleSpec("exp", "experiment", experiment=_experiment(status=status)))
    assert flag_feature(spec)["rules"] == []
    assert _eval(spec, {"id": "u", "country": "US"}).reason == "default"


def test_experiment_variants_must_be_flag_variations():
    exp = _experiment(variants=(VariantSpec("control", 1, 0), VariantSpec("on", 1, 1)))
    with pytest.raises(ValueError, match="unknown variations"):
        _flag(RuleSpec("exp", "experiment", experiment=exp))


# --- prerequisites ---------------------------------------------------------------------------


def _parent(enabled=True, rule=None):
    rules = (
        (rule,) if rule else (RuleSpec("pro", "force", condition={"plan": "pro"}, variation="on"),)
    )
    return _flag(*rules, key="parent", enabled=enabled)


def _child(*parents):
    return _flag(
        RuleSpec("all", "force", variation="on"),
        key="child",
        prerequisites=tuple(Prerequisite(p, ("on",)) for p in parents),
    )


def test_prerequisite_met_lets_the_rules_decide_and_unmet_serves_off():
    parent, child = _parent(), _child("parent")
    flags = {"parent": parent, "child": child}
    assert _eval(child, {"plan": "pro"}, flags).reason == "rule"
    result = _eval(child, {"plan": "free"}, flags)
    assert (result.reason, result.variation, result.extra) == (
        "prerequisite",
        "off",
        {"prerequisite": "parent"},
    )
    assert flag_feature(child, flags)["rules"][0] == {
        "id": "child:prerequisite:parent",
        "parentConditions": [{"id": "parent", "condition": {"value": {"$nin": [True]}}}],
        "force": False,
    }


def test_prerequisite_on_json_values_compares_whole_values():
    """$nin never matches an array or object, so JSON values are compared by equality."""
    layouts = (Variation("old", {"cols": [1, 2]}), Variation("new", [{"cols": 3}]))
    parent = _flag(
        RuleSpec("pro", "force", condition={"plan": "pro"}, variation="new"),
        key="parent",
        type="json",
        variations=layouts,
        off_variation="old",
        default="old",
    )
    child = _flag(
        RuleSpec("all", "force", variation="on"),
        key="child",
        prerequisites=(Prerequisite("parent", ("new",)),),
    )
    flags = {"parent": parent, "child": child}
    assert _eval(child, {"plan": "pro"}, flags).reason == "rule"
    assert _eval(child, {"plan": "free"}, flags).reason == "prerequisite"
    assert flag_feature(child, flags)["rules"][0]["parentConditions"][0]["condition"] == {
        "$nor": [{"value": [{"cols": 3}]}]
    }


@pytest.mark.parametrize("case", ["off", "missing"])
def test_prerequisite_on_an_off_or_missing_parent_is_never_met(case):
    child = _child("parent")
    flags = {"child": child}
    if case == "off":
        flags["parent"] = _parent(enabled=False, rule=None)
    assert _eval(child, {"plan": "pro"}, flags).reason == "prerequisite"
    assert flag_feature(child, flags)["rules"][0] == {
        "id": "child:prerequisite:parent",
        "force": False,
    }


def test_prerequisite_cycle_turns_every_flag_on_it_off_without_recursing():
    a = _flag(
        RuleSpec("r", "force", variation="on"), key="a", prerequisites=(Prerequisite("b", ("on",)),)
    )
    b = _flag(
        RuleSpec("r", "force", variation="on"), key="b", prerequisites=(Prerequisite("a", ("on",)),)
    )
    c = _child("a")
    flags = {"a": a, "b": b, "child": c}
    assert {k: r.reason for k, r in evaluate_flags(flags, {"id": "u"}).items()} == {
        "a": "prerequisite",
        "b": "prerequisite",
        "child": "prerequisite",
    }
    payload = build_payload([], flags=flags)["features"]
    assert "parentConditions" not in payload["a"]["rules"][0]
    assert "parentConditions" in payload["child"]["rules"][0]


def test_prerequisite_chain_deeper_than_the_cap_is_unmet():
    flags = {"f0": _flag(RuleSpec("r", "force", variation="on"), key="f0")}
    for i in range(1, MAX_PREREQUISITE_DEPTH + 2):
        flags[f"f{i}"] = _flag(
            RuleSpec("r", "force", variation="on"),
            key=f"f{i}",
            prerequisites=(Prerequisite(f"f{i - 1}", ("on",)),),
        )
    assert _eval(flags[f"f{MAX_PREREQUISITE_DEPTH}"], {}, flags).reason == "rule"
    assert _eval(flags[f"f{MAX_PREREQUISITE_DEPTH + 1}"], {}, flags).reason == "prerequisite"
    # Deciding them all at once (each flag once, parents reused) answers as one at a time,
    # in either order: near the cap a result depends on the depth it was asked at.
    for keys in (list(flags), list(reversed(flags))):
        together = evaluate_flags(flags, {}, keys)
        assert together == {key: _eval(flags[key], {}, flags) for key in keys}


def test_a_parent_of_several_flags_is_decided_once_per_call():
    """Flags sharing a prerequisite (a diamond too) get the same answers together as alone."""

    def needs(*parents):
        return tuple(Prerequisite(parent, ("on",)) for parent in parents)

    force = RuleSpec("r", "force", variation="on")
    half = RuleSpec("r", "rollout", weights=(("on", 0.5), ("off", 0.5)))
    root = _flag(half, key="root")
    left = _flag(force, key="left", prerequisites=needs("root"))
    right = _flag(force, key="right", prerequisites=needs("root"))
    both = _flag(force, key="both", prerequisites=needs("left", "right"))
    flags = {f.key: f for f in (both, left, right, root)}
    for unit in (f"u{i}" for i in range(200)):
        together = evaluate_flags(flags, {"id": unit})
        assert together == {key: _eval(spec, {"id": unit}, flags) for key, spec in flags.items()}
        assert together["both"].reason == (
            "rule" if together["root"].variation == "on" else "prerequisite"
        )


def test_flag_feature_needs_the_served_flags_for_prerequisites():
    with pytest.raises(ValueError, match="prerequisites"):
        flag_feature(_child("parent"))


# --- specs and the payload ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,problem",
    [
        (dict(type="number"), "not a number value"),
        (dict(variations=(Variation("on", None), Variation("off", False))), "not a boolean"),
        (dict(off_variation="nope"), "off variation"),
        (dict(default="nope"), "default variation"),
        (dict(variations=(Variation("on", True), Variation("on", False))), "unique"),
        (dict(rules=(RuleSpec("r", "force", variation="maybe"),)), "unknown variations"),
        (dict(rules=(RuleSpec("r", "force", variation="on"),) * 2), "rule ids"),
        (dict(type="yaml"), "unknown type"),
    ],
)
def test_inconsistent_flag_specs_are_refused(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        _flag(**overrides)


def test_rule_specs_are_validated():
    with pytest.raises(ValueError, match="unknown type"):
        RuleSpec("r", "percent")
    with pytest.raises(ValueError, match="needs a variation"):
        RuleSpec("r", "force")
    with pytest.raises(ValueError, match="needs an experiment"):
        RuleSpec("r", "experiment")


def test_number_and_json_flags_serve_their_values():
    spec = FlagSpec(
        key="limits",
        type="json",
        variations=(Variation("small", {"max": 1}), Variation("big", [1, 2])),
        off_variation="small",
        seed="s",
        enabled=True,
        default_variation="big",
    )
    assert _eval(spec, {}).value == [1, 2]
    number = _flag(type="number", variations=(Variation("on", 2.5), Variation("off", 0)))
    assert _eval(number, {}).value == 0


def test_build_payload_serves_experiments_and_flags_and_refuses_shared_keys():
    exp = _experiment()
    flag = _flag(key="new-ui")
    payload = build_payload([exp], flags={"new-ui": flag}, date_updated="2024-01-01T00:00:00Z")
    assert payload["features"] == {
        "checkout": feature_definition(exp),
        "new-ui": flag_feature(flag),
    }
    assert build_payload([exp]) == build_payload([exp], flags=())
    with pytest.raises(ValueError, match="key of an experiment"):
        build_payload([exp], flags=[_flag(key="checkout")])
    with pytest.raises(ValueError, match="two flags"):
        build_payload([], flags=[flag, flag])


def test_evaluate_flags_leaves_unknown_keys_out():
    flags = {"a": _flag(key="a"), "b": _flag(key="b", default="on")}
    assert set(evaluate_flags(flags, {})) == {"a", "b"}
    results = evaluate_flags(flags, {}, keys=["b", "zz"])
    assert list(results) == ["b"] and results["b"].value is True


def test_prerequisites_shared_down_a_long_chain_cost_one_decision_per_flag(monkeypatch):
    """Each flag needing the two before it: deciding them one parent at a time would take
    Fibonacci(depth) decisions (seconds at 26 flags, minutes at 32); each flag is decided once."""
    from bucketing import flags as module

    decided = []
    by_rules = module._by_rules
    monkeypatch.setattr(module, "_by_rules", lambda spec, a: decided.append(1) or by_rules(spec, a))
    force = RuleSpec("r", "force", variation="on")
    flags = {"f0": _flag(force, key="f0"), "f1": _flag(force, key="f1")}
    for i in range(2, MAX_PREREQUISITE_DEPTH):
        needs = (Prerequisite(f"f{i - 1}", ("on",)), Prerequisite(f"f{i - 2}", ("on",)))
        flags[f"f{i}"] = _flag(force, key=f"f{i}", prerequisites=needs)
    last = f"f{MAX_PREREQUISITE_DEPTH - 1}"
    assert _eval(flags[last], {"id": "u"}, flags).reason == "rule"
    assert len(decided) == len(flags)
    decided.clear()
    assert all(r.reason == "rule" for r in evaluate_flags(flags, {"id": "u"}).values())
    assert len(decided) == len(flags)
