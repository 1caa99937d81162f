"""Feature flags as GrowthBook features, and the same decision made on the server.

Pure: plain data in, plain data out (no Django). One definition serves both sides, as for
experiments in `bucketing.payload`: `flag_feature` describes a flag in one environment as a
GrowthBook feature that every GrowthBook SDK evaluates locally, and `evaluate_flag` makes the
same decision on the server for ``POST /api/v1/evaluate`` (with a reason and the rule that
decided), so for any unit the SDK's value equals the server's.

Semantics (docs/flags.md):

- **off** (the flag is disabled in the environment): the off variation, for everyone.
- **prerequisite**: when a prerequisite flag does not serve one of the listed variations to the
  unit (or is off, archived, missing), the off variation. "Serves" compares values, as the SDKs
  can only see values: a parent serving another variation with the same value passes too (JSON
  values compare as JSON, keys in order; ``{}`` and objects with only ``$`` keys read as
  conditions, so they make poor prerequisite values).
  Prerequisites on a cycle (services refuse them) can never pass: every flag on the cycle is off.
- **rules**, in order, first match wins:
  - ``force``: units matching the condition (and/or the segment) get the variation;
  - ``rollout``: units matching get a variation by hash (GrowthBook hash v2, the flag's seed,
    the rule's hash attribute): variation i owns the slice ``[sum of the weights before it,
    that sum + its weight)`` of ``[0, 1)``, in the order of the flag's variations, so a unit in
    a variation's slice stays in it as that variation's share grows (when it is first or the
    others shrink from the end). A unit without the hash attribute (missing, empty, zero, a
    boolean: whatever the SDKs do not hash) skips the rule;
  - ``experiment``: an abacus experiment whose variant keys are flag variation keys; a unit the
    experiment includes gets its variant's flag value; units it excludes (coverage, targeting,
    namespace) fall through to the next rule. A concluded experiment with a shipped variant
    forces that variation (reason ``rule``) on the units its targeting matches; otherwise
    (draft, paused, rolled back, concluded without a decision) the rule is skipped.
- **default**: no rule matched: the environment's default variation.

Segments: units whose ``id`` attribute is in ``include``, or (when the segment has a
non-empty condition) that match the condition; minus those whose ``id`` is in ``exclude``. A
segment with an empty condition is exactly its include list. Ids compare as strings: a numeric
``id`` attribute never matches an include entry.

Holdout: a flag served with the project's running holdout (``FlagSpec.holdout``,
`bucketing.holdout`) keeps its rollouts, its experiment rules and the force rule of a shipped
experiment away from the holdout's units (those rules carry the holdout's filter, and on the
server the same hash skips them): the units fall through to the next rule, usually to the
default. Force rules (targeted overrides) and the off switch apply to them like to anyone.

In the payload each rule becomes one or more GrowthBook rules whose ``id`` starts with the rule
id (``"<rule id>"`` or ``"<rule id>:<variation key>"``); prerequisites become force rules of the
off value, first, gated by ``parentConditions`` on the parent flag's value
(``"<flag>:prerequisite:<parent>"``). The server evaluates the very conditions, ranges and
seeds the payload carries, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bucketing.conditions import eval_condition
from bucketing.flag_checks import WEIGHT_TOLERANCE, flag_problems, rule_problems
from bucketing.hashing import hash_string, hash_v2_from_state, seed_state
from bucketing.holdout import HoldoutSpec, filters_out, holdout_filter
from bucketing.payload import HASH_VERSION, ExperimentSpec, evaluate, feature_definition

REASONS = ("off", "prerequisite", "rule", "rollout", "experiment", "default")
# Prerequisite chains deeper than this count as unmet on the server (services keep them short;
# the SDKs have no limit, so this only guards against runaway recursion).
MAX_PREREQUISITE_DEPTH = 32


@dataclass(frozen=True)
class Variation:
    key: str
    value: Any  # never None: the SDKs read a null force as "no force"


@dataclass(frozen=True)
class SegmentSpec:
    key: str
    condition: dict[str, Any] | None = None  # GrowthBook condition; None or {} = include list only
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class RuleSpec:
    """One rule, resolved: its segment and experiment are given as specs, not keys.

    ``weights`` may also be given as a mapping; it is stored as ``(key, share)`` pairs. Raises
    ``ValueError`` when the rule is inconsistent on its own (see `FlagSpec` for the rest).
    """

    id: str
    type: str  # "force" | "rollout" | "experiment"
    condition: dict[str, Any] | None = None  # AND-ed with the segment when both are given
    segment: SegmentSpec | None = None
    variation: str | None = None  # force
    hash_attribute: str = "id"  # rollout
    weights: tuple[tuple[str, float], ...] = ()  # rollout: (variation key, share), summing to 1
    experiment: ExperimentSpec | None = None  # experiment

    def __post_init__(self) -> None:
        weights = self.weights.items() if isinstance(self.weights, Mapping) else self.weights
        object.__setattr__(self, "weights", tuple((k, s) for k, s in weights))
        problems = rule_problems(self)
        if problems:
            raise ValueError(f"rule {self.id!r}: " + "; ".join(problems))


@dataclass(frozen=True)
class Prerequisite:
    flag: str
    variations: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "variations", tuple(self.variations))


@dataclass(frozen=True)
class FlagSpec:
    """A flag as served in one environment (plain data, no ORM).

    Raises ``ValueError`` when the spec is inconsistent: unknown type, duplicate or missing
    variation keys, a value of the wrong type (or None), a rule naming a variation the flag does
    not have, an experiment whose variant keys are not all flag variation keys.
    """

    key: str
    type: str  # "boolean" | "string" | "number" | "json"
    variations: tuple[Variation, ...]
    off_variation: str
    seed: str
    enabled: bool
    default_variation: str
    rules: tuple[RuleSpec, ...] = ()
    prerequisites: tuple[Prerequisite, ...] = ()
    holdout: HoldoutSpec | None = None  # the project's running holdout (see the module doc)
    if TYPE_CHECKING:  # set in __post_init__, deliberately not a dataclass field
        _plan: _FlagPlan

    def __post_init__(self) -> None:
        for name in ("variations", "rules", "prerequisites"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = flag_problems(self)
        if problems:
            raise ValueError(f"flag {self.key!r}: " + "; ".join(problems))
        object.__setattr__(self, "_plan", _FlagPlan(self))

    def value_of(self, variation: str) -> Any:
        for v in self.variations:
            if v.key == variation:
                return v.value
        raise KeyError(variation)


@dataclass(frozen=True)
class FlagResult:
    value: Any
    variation: str
    reason: str  # one of REASONS
    rule_id: str | None = None
    # Experiment rules: the experiment key and variant the unit is in (for exposure tracking).
    experiment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def segment_condition(segment: SegmentSpec) -> dict[str, Any]:
    """The segment as one GrowthBook condition: ``{"id": {"$in": include}}``, OR-ed with the
    segment's condition when it has one, AND-ed with ``{"id": {"$nin": exclude}}`` when it
    excludes anyone (see the module docstring)."""
    included: dict[str, Any] = {"id": {"$in": list(segment.include)}}
    if segment.condition:
        included = {"$or": [included, segment.condition]} if segment.include else segment.condition
    if segment.exclude:
        return {"$and": [included, {"id": {"$nin": list(segment.exclude)}}]}
    return included


def _and(*conditions: dict[str, Any] | None) -> dict[str, Any] | None:
    parts = [c for c in conditions if c]
    if len(parts) > 1:
        return {"$and": parts}
    return parts[0] if parts else None


class _Rule:
    """One flag rule compiled for serving: what the payload carries and the server checks."""

    __slots__ = ("id", "kind", "condition", "variation", "value", "hash_attribute", "state")
    __slots__ += ("slices", "experiment", "held")

    def __init__(self, rule_id: str, kind: str, condition: dict[str, Any] | None) -> None:
        self.id = rule_id
        self.kind = kind  # "force" | "rollout" | "experiment"
        self.condition = condition
        self.variation: str = ""
        self.value: Any = None
        self.hash_attribute = "id"
        self.state = 0
        self.slices: tuple[tuple[float, float, str, Any], ...] = ()  # (lo, hi, key, value)
        self.experiment: ExperimentSpec | None = None
        # Kept from the holdout's units (by ``hash_attribute``): rollouts, shipped experiments.
        self.held = False


class _FlagPlan:
    """Everything the payload and the server need, computed once per spec."""

    __slots__ = ("seed", "values", "rules", "holdout")

    def __init__(self, spec: FlagSpec) -> None:
        self.seed = spec.seed or spec.key  # the SDKs fall back to the feature key
        self.values = {v.key: v.value for v in spec.variations}
        self.holdout = spec.holdout
        self.rules = tuple(r for rule in spec.rules if (r := self._compile(spec, rule)))

    def _compile(self, spec: FlagSpec, rule: RuleSpec) -> _Rule | None:
        # The rule's own condition AND its segment's.
        condition = _and(rule.condition, segment_condition(rule.segment) if rule.segment else None)
        if rule.type == "force":
            return self._force(rule.id, condition, rule.variation or "")
        if rule.type == "rollout":
            out = _Rule(rule.id, "rollout", condition)
            out.hash_attribute = rule.hash_attribute
            out.state = seed_state(self.seed)
            out.slices = _slices(spec, dict(rule.weights))
            out.held = True
            return out
        exp = rule.experiment
        assert exp is not None  # checked by RuleSpec
        if exp.status == "concluded" and exp.shipped_variant is not None:
            out = self._force(rule.id, _and(condition, exp.condition), exp.shipped_variant)
            out.hash_attribute = exp.hash_attribute
            out.held = True
            return out
        if exp.status != "running":
            return None
        out = _Rule(rule.id, "experiment", condition)
        # The flag's holdout governs its rules, whatever the experiment's spec carried.
        out.experiment = exp if exp.holdout == spec.holdout else replace(exp, holdout=spec.holdout)
        return out

    def _force(self, rule_id: str, condition: dict[str, Any] | None, variation: str) -> _Rule:
        out = _Rule(rule_id, "force", condition)
        out.variation = variation
        out.value = self.values[variation]
        return out


def _slices(spec: FlagSpec, shares: dict[str, float]) -> tuple[tuple[float, float, str, Any], ...]:
    """Cumulative ``[lo, hi)`` per variation with a share, in the flag's variation order."""
    slices = []
    total = 0.0
    for v in spec.variations:
        share = shares.get(v.key, 0)
        lo, total = total, total + share
        if share > 0:
            slices.append([lo, total, v.key, v.value])
    if slices and abs(total - 1) <= WEIGHT_TOLERANCE:
        slices[-1][1] = 1.0  # rounding must never leave the top of [0, 1) to nobody
    return tuple((lo, hi, key, value) for lo, hi, key, value in slices)


# --- prerequisites -------------------------------------------------------------------------


def _depends_on(start: str, target: str, flags: Mapping[str, FlagSpec]) -> bool:
    """Whether ``start`` has ``target`` among its prerequisites, directly or through others
    (only enabled flags count: a disabled flag serves its off value without asking anyone)."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        key = stack.pop()
        if key == target:
            return True
        if key in seen:
            continue
        seen.add(key)
        spec = flags.get(key)
        if spec is not None and spec.enabled:
            stack.extend(p.flag for p in spec.prerequisites)
    return False


def _parent_condition(
    spec: FlagSpec, prerequisite: Prerequisite, flags: Mapping[str, FlagSpec]
) -> dict[str, Any] | None:
    """The condition on the parent's value that makes the prerequisite fail, or None when it
    can never pass (the parent is missing, archived, off, or depends on this flag)."""
    parent = flags.get(prerequisite.flag)
    if parent is None or not parent.enabled or _depends_on(parent.key, spec.key, flags):
        return None
    allowed = [parent._plan.values[k] for k in prerequisite.variations if k in parent._plan.values]
    if any(isinstance(v, list | dict) for v in allowed):
        # $nin never matches an array or object (it tests their elements); a plain value is a
        # deep equality. Objects that read as operators ({} or only "$" keys) cannot be told apart.
        return {"$nor": [{"value": v} for v in allowed]}
    return {"value": {"$nin": allowed}}


def _prerequisite_rule(
    spec: FlagSpec, prerequisite: Prerequisite, flags: Mapping[str, FlagSpec]
) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"{spec.key}:prerequisite:{prerequisite.flag}"}
    condition = _parent_condition(spec, prerequisite, flags)
    if condition is not None:
        rule["parentConditions"] = [{"id": prerequisite.flag, "condition": condition}]
    rule["force"] = spec._plan.values[spec.off_variation]
    return rule


# --- the payload ---------------------------------------------------------------------------


def flag_feature(spec: FlagSpec, flags: Mapping[str, FlagSpec] | None = None) -> dict[str, Any]:
    """The flag as a GrowthBook feature: ``{"defaultValue": ..., "rules": [...]}``.

    ``flags``: every flag served in the environment by key, as for `evaluate_flag`; needed (and
    only read) when the flag has prerequisites. `bucketing.payload.build_payload` passes it.
    """
    plan = spec._plan
    if not spec.enabled:
        return {"defaultValue": plan.values[spec.off_variation], "rules": []}
    if spec.prerequisites and flags is None:
        raise ValueError(f"flag {spec.key!r} has prerequisites: pass every served flag")
    rules = [_prerequisite_rule(spec, p, flags or {}) for p in spec.prerequisites]
    for rule in plan.rules:
        rules += _payload_rules(spec, rule)
    return {"defaultValue": plan.values[spec.default_variation], "rules": rules}


def _payload_rules(spec: FlagSpec, rule: _Rule) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {"condition": rule.condition} if rule.condition else {}
    holdout = spec._plan.holdout
    if rule.held and holdout is not None:
        extra["filters"] = [holdout_filter(holdout, rule.hash_attribute)]
    if rule.kind == "force":
        return [{"id": rule.id, **extra, "force": rule.value}]
    if rule.kind == "rollout":
        return [
            {
                "id": f"{rule.id}:{key}",
                **extra,
                "force": value,
                "hashAttribute": rule.hash_attribute,
                "seed": spec._plan.seed,
                "hashVersion": HASH_VERSION,
                "range": [lo, hi],
            }
            for lo, hi, key, value in rule.slices
        ]
    exp = rule.experiment
    assert exp is not None
    # The experiment's own rule, as served under its key, with the flag's values.
    out = dict(feature_definition(exp)["rules"][0])
    out["id"] = rule.id
    out["variations"] = [spec._plan.values[v.key] for v in exp.variants]
    both = _and(rule.condition, exp.condition)
    if both:
        out["condition"] = both
    return [out]


# --- the server's decision -----------------------------------------------------------------


def evaluate_flag(
    spec: FlagSpec, attributes: Mapping[str, Any], flags: Mapping[str, FlagSpec]
) -> FlagResult:
    """What the SDK would serve this unit, and why. ``flags``: every flag served in the
    environment by key (for prerequisites)."""
    try:
        return _evaluate(spec, attributes, flags, 0, {})[0]
    except _TooDeep:
        return _evaluate(spec, attributes, flags, 0, None)[0]


class _TooDeep(Exception):
    """Reusing a result would reach ``MAX_PREREQUISITE_DEPTH`` where deciding it afresh
    would: near the cap a result depends on the depth it is asked at, so decide afresh."""


# One unit's decisions within one call, by flag key: the result and its height (how many
# prerequisite levels deciding it went down; 0: none). None: decide every flag afresh.
_Memo = dict[str, tuple["FlagResult", int]] | None


def _evaluate(
    spec: FlagSpec,
    attributes: Mapping[str, Any],
    flags: Mapping[str, FlagSpec],
    depth: int,
    memo: _Memo,
) -> tuple[FlagResult, int]:
    if memo is not None:
        found = memo.get(spec.key)
        if found is not None:
            # Decided afresh at this depth, its chain would end past the cap (see _decide).
            if depth + found[1] > MAX_PREREQUISITE_DEPTH:
                raise _TooDeep
            return found
    found = _decide(spec, attributes, flags, depth, memo)
    if memo is not None:
        memo[spec.key] = found
    return found


def _decide(
    spec: FlagSpec,
    attributes: Mapping[str, Any],
    flags: Mapping[str, FlagSpec],
    depth: int,
    memo: _Memo,
) -> tuple[FlagResult, int]:
    """The flag's result (off, a prerequisite unmet, or its rules') and its height. A flag at
    ``depth`` asks its parents only below ``MAX_PREREQUISITE_DEPTH``; beyond, the prerequisite
    is unmet (a chain that long is a mistake, and the SDKs would recurse without end)."""
    plan = spec._plan
    if not spec.enabled:
        return FlagResult(plan.values[spec.off_variation], spec.off_variation, "off"), 0
    height = 0
    for prerequisite in spec.prerequisites:
        condition = _parent_condition(spec, prerequisite, flags)
        met = False
        if condition is not None:
            if depth < MAX_PREREQUISITE_DEPTH:
                parent, parent_height = _evaluate(
                    flags[prerequisite.flag], attributes, flags, depth + 1, memo
                )
                height = max(height, parent_height + 1)
                met = not eval_condition({"value": parent.value}, condition)
            elif memo is not None:
                raise _TooDeep
        if not met:
            off = spec.off_variation
            extra = {"prerequisite": prerequisite.flag}
            return FlagResult(plan.values[off], off, "prerequisite", extra=extra), height
    return _by_rules(spec, attributes), height


def _by_rules(spec: FlagSpec, attributes: Mapping[str, Any]) -> FlagResult:
    """The first matching rule's result, else the default (prerequisites met)."""
    plan = spec._plan
    attrs = attributes if isinstance(attributes, dict) else dict(attributes)
    holdout = plan.holdout
    for rule in plan.rules:
        if rule.condition is not None and not eval_condition(attrs, rule.condition):
            continue
        if rule.held and holdout is not None and filters_out(holdout, attrs, rule.hash_attribute):
            continue
        if rule.kind == "force":
            return FlagResult(rule.value, rule.variation, "rule", rule.id)
        if rule.kind == "rollout":
            unit = attrs.get(rule.hash_attribute)
            if unit.__class__ is not str:
                unit = hash_string(unit)
            if not unit:
                continue
            n = hash_v2_from_state(rule.state, unit)
            for lo, hi, key, value in rule.slices:
                if lo <= n < hi:
                    return FlagResult(value, key, "rollout", rule.id)
            continue
        exp = rule.experiment
        assert exp is not None
        variant = evaluate(exp, attrs)
        if variant is not None:
            value = plan.values[variant]
            return FlagResult(value, variant, "experiment", rule.id, experiment=exp.key)
    default = spec.default_variation
    return FlagResult(plan.values[default], default, "default")


def evaluate_flags(
    flags: Mapping[str, FlagSpec],
    attributes: Mapping[str, Any],
    keys: Iterable[str] | None = None,
) -> dict[str, FlagResult]:
    """`evaluate_flag` for the given keys (every flag when None); unknown keys are left out.

    A flag is decided once per call: a prerequisite's parent asked for too (or the parent of
    several flags) reuses its result, unless a chain reached ``MAX_PREREQUISITE_DEPTH`` (then
    every flag is decided on its own, as `evaluate_flag` alone would)."""
    wanted = flags.keys() if keys is None else keys
    attrs = attributes if isinstance(attributes, dict) else dict(attributes)
    memo: dict[str, tuple[FlagResult, int]] = {}
    try:
        return {
            key: _evaluate(flags[key], attrs, flags, 0, memo)[0] for key in wanted if key in flags
        }
    except _TooDeep:
        return {
            key: _evaluate(flags[key], attrs, flags, 0, None)[0] for key in wanted if key in flags
        }
