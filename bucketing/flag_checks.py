"""What makes a flag spec (`bucketing.flags.FlagSpec`) or one of its rules inconsistent on its
own: the checks the specs run when they are made, each problem as a sentence. Pure, like the
rest of `bucketing`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bucketing.holdout import HoldoutSpec

if TYPE_CHECKING:
    from bucketing.flags import FlagSpec, RuleSpec

FLAG_TYPES = ("boolean", "string", "number", "json")
RULE_TYPES = ("force", "rollout", "experiment")
WEIGHT_TOLERANCE = 1e-9  # rollout shares must sum to 1 within this


def rule_problems(rule: RuleSpec) -> list[str]:
    problems = []
    if not rule.id:
        problems.append("the id must not be empty")
    if rule.type not in RULE_TYPES:
        problems.append(f"unknown type {rule.type!r}; expected one of {', '.join(RULE_TYPES)}")
    if rule.condition is not None and not isinstance(rule.condition, dict):
        problems.append("the condition must be an object")
    if rule.type == "force" and not rule.variation:
        problems.append("a force rule needs a variation")
    if rule.type == "experiment" and rule.experiment is None:
        problems.append("an experiment rule needs an experiment")
    if rule.type == "rollout":
        if not rule.hash_attribute:
            problems.append("the hash attribute must not be empty")
        keys = [k for k, _ in rule.weights]
        shares = [s for _, s in rule.weights]
        if len(set(keys)) != len(keys):
            problems.append("each variation may have one share only")
        if any(
            isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s < 0
            for s in shares
        ):
            problems.append("shares must be finite numbers between 0 and 1")
        elif abs(sum(shares) - 1) > WEIGHT_TOLERANCE:
            problems.append(f"shares must sum to 1 (they sum to {sum(shares):g})")
    return problems


def _type_ok(flag_type: str, value: Any) -> bool:
    if value is None:
        return False
    if flag_type == "boolean":
        return isinstance(value, bool)
    if flag_type == "string":
        return isinstance(value, str)
    if flag_type == "number":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    return True  # json: any JSON value but null


def flag_problems(spec: FlagSpec) -> list[str]:
    problems = []
    if not spec.key:
        problems.append("the key must not be empty")
    if spec.type not in FLAG_TYPES:
        problems.append(f"unknown type {spec.type!r}; expected one of {', '.join(FLAG_TYPES)}")
    keys = [v.key for v in spec.variations]
    if not keys or len(set(keys)) != len(keys):
        problems.append("variation keys must be present and unique")
    problems += [
        f"the value of {v.key!r} is not a {spec.type} value"
        for v in spec.variations
        if not _type_ok(spec.type, v.value)
    ]
    for name in ("off_variation", "default_variation"):
        if getattr(spec, name) not in keys:
            problems.append(
                f"the {name.replace('_', ' ')} {getattr(spec, name)!r} is not a variation"
            )
    for rule in spec.rules:
        named = [rule.variation] if rule.type == "force" else [k for k, _ in rule.weights]
        if rule.type == "experiment" and rule.experiment is not None:
            named = [v.key for v in rule.experiment.variants]
        unknown = [k for k in named if k not in keys]
        if unknown:
            problems.append(f"rule {rule.id!r} names unknown variations {unknown}")
    ids = [r.id for r in spec.rules]
    if len(set(ids)) != len(ids):
        problems.append("rule ids must be unique")
    if any(p.flag == spec.key for p in spec.prerequisites):
        problems.append("a flag cannot be its own prerequisite")
    if spec.holdout is not None and not isinstance(spec.holdout, HoldoutSpec):
        problems.append("the holdout must be a HoldoutSpec")
    return problems
