"""The GrowthBook-compatible features payload and the server-side assignment decision.

One definition serves both sides: `build_payload` describes each experiment as a feature
that the official GrowthBook SDKs evaluate locally, and `evaluate` is the same decision made on the
server for ``/assign``, so for any unit the SDK's answer equals the server's.

Each experiment becomes a feature keyed by the experiment key whose ``defaultValue`` is the
control's value:

- ``running``: one experiment rule (hash version 2, the experiment's seed, hash attribute, coverage,
  normalised weights, the variants' values as ``variations`` and their keys in ``meta``, targeting
  ``condition`` and ``namespace``). Units outside it get the default, i.e. control, without an
  assignment.
- ``paused``, ``rolled_back``, ``concluded`` without a decision: no rule, control for everyone.
- ``concluded`` with ``shipped_variant``: a force rule, that variant's value for everyone.
- ``draft``: not served.

With a project holdout (``holdout``, `bucketing.holdout`), the experiment rule and the shipped
variant's force rule carry the holdout's filter: the holdout's units get the default (control),
in the SDKs and on the server alike (the namespace then travels as a filter too).

Variants keep the order given: it fixes which slice of ``[0, 1)`` each one owns, so callers must
pass them in a stable order (the order of creation). Since several variants may share a value,
SDK results should be matched by ``experimentResult.key`` (the variant key from ``meta``), not by
value.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bucketing.conditions import eval_condition
from bucketing.hashing import (
    choose_variant_many,
    fnv1a32,
    gb_hash_many,
    get_bucket_ranges,
    hash_string,
    hash_v2_from_state,
    seed_state,
)
from bucketing.holdout import (
    HoldoutSpec,
    held_many,
    holdout_filter,
    namespace_filter,
)

if TYPE_CHECKING:
    from bucketing.flags import FlagSpec

STATUSES = ("draft", "running", "paused", "rolled_back", "concluded")
HASH_VERSION = 2
_VECTOR_MIN = 256  # below this many units numpy's fixed costs outweigh its speed


@dataclass(frozen=True)
class VariantSpec:
    """One arm: ``weight`` is relative (weights are normalised to sum to 1), ``value`` any JSON."""

    key: str
    weight: float
    value: Any = None
    is_control: bool = False


@dataclass(frozen=True)
class ExperimentSpec:
    """What bucketing and the payload need to know about one experiment (plain data, no ORM).

    ``namespace`` is ``(namespace id, start, end)`` with ``0 <= start <= end <= 1``: experiments in
    the same namespace with disjoint slices never share a unit. ``shipped_variant`` only matters
    once the experiment is ``concluded``. ``holdout``: the project's running holdout, whose units
    the experiment (and its shipped variant) never reaches. Raises ``ValueError`` when the spec
    is inconsistent.
    """

    key: str
    seed: str
    hash_attribute: str
    coverage: float
    variants: tuple[VariantSpec, ...]
    condition: dict[str, Any] | None = None
    namespace: tuple[str, float, float] | None = None
    status: str = "running"
    shipped_variant: str | None = None
    phase: int = 0
    holdout: HoldoutSpec | None = None
    if TYPE_CHECKING:  # set in __post_init__, deliberately not a dataclass field
        _plan: _Plan

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.namespace is not None:
            object.__setattr__(self, "namespace", tuple(self.namespace))
        problems = self._problems()
        if problems:
            raise ValueError(f"experiment {self.key!r}: " + "; ".join(problems))
        object.__setattr__(self, "_plan", _Plan(self))

    def _problems(self) -> list[str]:
        problems = []
        if not self.key:
            problems.append("the key must not be empty")
        if self.status not in STATUSES:
            expected = ", ".join(STATUSES)
            problems.append(f"unknown status {self.status!r}; expected one of {expected}")
        if not self.hash_attribute:
            problems.append("the hash attribute must not be empty")
        if not (isinstance(self.coverage, int | float) and 0 <= self.coverage <= 1):
            problems.append("coverage must be a number between 0 and 1")
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys):
            problems.append("variant keys must be unique")
        if self.status != "draft" and len(self.variants) < 2:
            problems.append("an experiment needs at least two variants")
        if sum(v.is_control for v in self.variants) > 1:
            problems.append("at most one variant can be the control")
        weights = [v.weight for v in self.variants]
        if any(
            isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0
            for w in weights
        ):
            problems.append("weights must be finite, non-negative numbers")
        elif self.variants and sum(weights) <= 0:
            problems.append("weights must not all be zero")
        if self.shipped_variant is not None and self.shipped_variant not in keys:
            problems.append(f"the shipped variant {self.shipped_variant!r} is not a variant")
        if self.namespace is not None:
            ns = self.namespace
            if not (
                len(ns) == 3
                and isinstance(ns[0], str)
                and ns[0]
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in ns[1:])
                and 0 <= ns[1] <= ns[2] <= 1
            ):
                problems.append("the namespace must be (id, start, end), 0 <= start <= end <= 1")
        # Targeting is validated where people write it (validate_condition): a stored condition
        # must never stop the payload from being served.
        if self.condition is not None and not isinstance(self.condition, dict):
            problems.append("the targeting condition must be an object")
        if self.holdout is not None and not isinstance(self.holdout, HoldoutSpec):
            problems.append("the holdout must be a HoldoutSpec")
        return problems

    @property
    def control(self) -> VariantSpec:
        """The control variant (the one marked ``is_control``, else the first)."""
        for v in self.variants:
            if v.is_control:
                return v
        return self.variants[0]

    @property
    def weights(self) -> tuple[float, ...]:
        """Weights normalised to sum to 1, as served to the SDKs and used for bucketing."""
        return self._plan.weights

    def variant(self, key: str) -> VariantSpec:
        for v in self.variants:
            if v.key == key:
                return v
        raise KeyError(key)


class _Plan:
    """Everything `evaluate` needs, precomputed once per spec."""

    __slots__ = (
        "running",
        "fixed_key",
        "weights",
        "condition",
        "hash_attribute",
        "namespace",
        "seed",
        "state",
        "live",
        "holdout",
        "null_shipped",
    )

    def __init__(self, spec: ExperimentSpec) -> None:
        self.running = spec.status == "running"
        shipped = spec.status == "concluded" and spec.shipped_variant is not None
        self.fixed_key = spec.shipped_variant if shipped else None
        total = sum(v.weight for v in spec.variants)
        self.weights = tuple(v.weight / total for v in spec.variants) if total > 0 else ()
        self.condition = spec.condition or None
        self.hash_attribute = spec.hash_attribute
        # (suffix hashed after the unit id, start, end): in_namespace(unit, ns) in one step.
        self.namespace = (
            ("__" + spec.namespace[0], spec.namespace[1], spec.namespace[2])
            if spec.namespace
            else None
        )
        self.seed = spec.seed or spec.key  # the SDK falls back to the key for an empty seed
        self.state = seed_state(self.seed)
        ranges = get_bucket_ranges(list(self.weights), spec.coverage, len(spec.variants))
        # Empty ranges hold nobody; dropping them leaves every answer unchanged.
        keys = [v.key for v in spec.variants]
        self.live = tuple((s, e, keys[i]) for i, (s, e) in enumerate(ranges) if s < e)
        self.holdout = spec.holdout
        # A shipped null value cannot be forced (the SDKs read a null force as no force): the
        # payload forces control on the holdout's units instead (see `feature_definition`).
        self.null_shipped = shipped and spec.variant(spec.shipped_variant).value is None


def evaluate(spec: ExperimentSpec, attributes: Mapping[str, Any]) -> str | None:
    """The variant key this unit gets, or ``None`` for the default (control) experience.

    For a running experiment: ``None`` unless the unit's hash attribute is a non-empty string or a
    non-zero number, it passes the targeting condition and the namespace, and its bucket falls in
    a variant's range. A concluded experiment with a shipped variant gives that variant to
    everyone; any other status gives ``None``. The holdout's units get ``None`` (see
    `_holds_from_shipped` for a shipped variant).
    """
    plan = spec._plan
    if not plan.running:
        if plan.holdout is not None and plan.fixed_key is not None:
            return None if _holds_from_shipped(plan, attributes) else plan.fixed_key
        return plan.fixed_key
    unit = attributes.get(plan.hash_attribute)
    if unit.__class__ is not str:
        unit = hash_string(unit)
    if not unit:
        return None
    if plan.holdout is not None and plan.holdout.holds(unit):
        return None
    ns = plan.namespace
    if ns is not None:
        n = (fnv1a32(unit + ns[0]) % 1000) / 1000
        if not ns[1] <= n < ns[2]:
            return None
    if plan.condition is not None and not eval_condition(attributes, plan.condition):
        return None
    n = hash_v2_from_state(plan.state, unit)
    for start, end, key in plan.live:
        if start <= n < end:
            return key
    return None


def _holds_from_shipped(plan: _Plan, attributes: Mapping[str, Any]) -> bool:
    """Whether the holdout keeps this unit on control rather than the shipped variant: the
    SDKs' answer to the filter of the payload's rule. The shipped force rule keeps units in
    ``[share, 1)`` (a unit without a hash value is filtered out: control); for a null shipped
    value the rule forcing control keeps units in ``[0, share)`` (no hash value: shipped)."""
    assert plan.holdout is not None
    unit = attributes.get(plan.hash_attribute)
    if unit.__class__ is not str:
        unit = hash_string(unit)
    if not unit:
        return not plan.null_shipped
    return plan.holdout.holds(unit)


def evaluate_many(spec: ExperimentSpec, units: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """`evaluate` for many units at once (the same answers), hashing with numpy: for bulk
    assignment and simulations."""
    plan = spec._plan
    if not plan.running:
        if plan.holdout is not None and plan.fixed_key is not None:
            return [evaluate(spec, attributes) for attributes in units]
        return [plan.fixed_key] * len(units)
    if len(units) < _VECTOR_MIN:
        return [evaluate(spec, attributes) for attributes in units]
    condition = plan.condition
    eligible: list[int] = []
    hashed: list[str] = []
    for i, attributes in enumerate(units):
        unit = attributes.get(plan.hash_attribute)
        if unit.__class__ is not str:
            unit = hash_string(unit)
        if unit and (condition is None or eval_condition(attributes, condition)):
            eligible.append(i)
            hashed.append(unit)
    out: list[str | None] = [None] * len(units)
    if not hashed:
        return out
    chosen = choose_variant_many(
        gb_hash_many(plan.seed, hashed, 2), [(s, e) for s, e, _ in plan.live]
    )
    if plan.namespace is not None:
        suffix, start, end = plan.namespace
        n = gb_hash_many(suffix, hashed, 1)
        chosen[(n < start) | (n >= end)] = -1
    if plan.holdout is not None:
        chosen[held_many(plan.holdout, hashed)] = -1
    keys = [key for _, _, key in plan.live]
    for i, c in zip(eligible, chosen.tolist(), strict=True):
        if c >= 0:
            out[i] = keys[c]
    return out


def value_for(spec: ExperimentSpec, attributes: Mapping[str, Any]) -> Any:
    """The feature value an SDK returns for these attributes: the chosen variant's, else the
    control's."""
    key = evaluate(spec, attributes)
    return spec.variant(key).value if key is not None else spec.control.value


def feature_definition(spec: ExperimentSpec) -> dict[str, Any]:
    """One experiment as a GrowthBook feature (``defaultValue`` plus ``rules``)."""
    control_value = spec.control.value
    plan = spec._plan
    if spec.status == "concluded" and spec.shipped_variant is not None:
        shipped = spec.variant(spec.shipped_variant).value
        if shipped is None:
            # A null force is read as "no force" by the SDKs: make null the default instead,
            # and force control on the holdout's units.
            if plan.holdout is None or control_value is None:
                return {"defaultValue": None, "rules": []}
            held = holdout_filter(plan.holdout, spec.hash_attribute)
            held["ranges"] = [[0.0, plan.holdout.share]]
            rule = {"id": f"{spec.key}:holdout", "filters": [held], "force": control_value}
            return {"defaultValue": None, "rules": [rule]}
        forced: dict[str, Any] = {"id": f"{spec.key}:shipped", "force": shipped}
        if plan.holdout is not None:
            forced["filters"] = [holdout_filter(plan.holdout, spec.hash_attribute)]
        return {"defaultValue": control_value, "rules": [forced]}
    if spec.status != "running":
        return {"defaultValue": control_value, "rules": []}
    rule: dict[str, Any] = {
        "id": f"{spec.key}:phase-{spec.phase}",
        "key": spec.key,
        "name": spec.key,
        "seed": plan.seed,
        "hashVersion": HASH_VERSION,
        "hashAttribute": spec.hash_attribute,
        "coverage": spec.coverage,
        "weights": list(plan.weights),
        "variations": [v.value for v in spec.variants],
        "meta": [{"key": v.key, "name": v.key} for v in spec.variants],
        "phase": str(spec.phase),
    }
    if plan.condition is not None:
        rule["condition"] = plan.condition
    if spec.namespace is not None:
        rule["namespace"] = list(spec.namespace)
    if plan.holdout is not None:
        # SDKs read filters instead of the namespace: it becomes a filter too.
        rule["filters"] = [holdout_filter(plan.holdout, spec.hash_attribute)]
        if spec.namespace is not None:
            rule["filters"].append(namespace_filter(spec.namespace, spec.hash_attribute))
    return {"defaultValue": control_value, "rules": [rule]}


def build_payload(
    specs: Iterable[ExperimentSpec],
    *,
    flags: Iterable[FlagSpec] | Mapping[str, FlagSpec] = (),
    date_updated: datetime | str | None = None,
) -> dict[str, Any]:
    """The body of ``GET /api/features/<client key>``: every non-draft experiment as a feature,
    and every flag given (`bucketing.flags.flag_feature`; pass only the served ones, as specs or
    a mapping of key to spec).

    Pass the latest change time of the experiments and flags as ``date_updated`` (not the
    current time) so the payload, and its `etag`, only change when one of them does. Raises
    ``ValueError`` when two served experiments, two flags, or a served experiment and a flag share
    a key (both are feature keys).
    """
    # Imported here: bucketing.flags builds on this module's ExperimentSpec.
    from bucketing.flags import flag_feature

    features: dict[str, Any] = {}
    for spec in sorted(specs, key=lambda s: s.key):
        if spec.status == "draft":
            continue
        if spec.key in features:
            raise ValueError(f"two experiments share the key {spec.key!r}")
        features[spec.key] = feature_definition(spec)
    served: dict[str, FlagSpec] = {}
    for flag in flags.values() if isinstance(flags, Mapping) else flags:
        if flag.key in features:
            raise ValueError(f"the flag {flag.key!r} has the key of an experiment")
        if flag.key in served:
            raise ValueError(f"two flags share the key {flag.key!r}")
        served[flag.key] = flag
    for key in sorted(served):
        features[key] = flag_feature(served[key], served)
    if isinstance(date_updated, datetime):
        date_updated = date_updated.isoformat().replace("+00:00", "Z")
    return {"status": 200, "features": features, "dateUpdated": date_updated}


def etag(payload: dict[str, Any]) -> str:
    """A strong ETag for the payload: equal payloads give equal tags."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
