"""Validation of flag definitions and per-environment rules: each refusal is a DomainError
naming the field to fix (``variations[1].value``, ``rules[2].weights``), in the words a person
needs to fix it. The services call these before every write, the API maps them to a 400."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bucketing.conditions import validate_condition
from bucketing.flag_checks import RULE_TYPES, WEIGHT_TOLERANCE
from core.errors import DomainError
from experiments.models import Environment, Experiment, Project, Segment
from experiments.services.rules import is_number
from flags.models import Flag, FlagType

KEY_RE = re.compile(r"^[-a-zA-Z0-9_]+$")
KEY_MAX = 100
RULE_ID_RE = re.compile(r"^[-a-zA-Z0-9_]{1,32}$")
ATTRIBUTE_RE = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.]{0,63}$")
MAX_RULES = 100
MAX_VARIATIONS = 100
MAX_STRING_VALUE = 10_000
MAX_UNIT_IDS = 10_000
UNIT_ID_MAX = 256
RULE_FIELDS = {
    "force": {"id", "type", "condition", "segment", "variation"},
    "rollout": {"id", "type", "condition", "segment", "hash_attribute", "weights"},
    "experiment": {"id", "type", "experiment"},
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_key(key: Any, field: str = "key", what: str = "The key") -> str:
    if not isinstance(key, str) or not key:
        raise DomainError(f"{what} is required (letters, digits, - and _).", field)
    if len(key) > KEY_MAX or not KEY_RE.match(key):
        raise DomainError(
            f"{what} '{key[:KEY_MAX]}' must be at most {KEY_MAX} letters, digits, - and _ "
            "(e.g. new-checkout).",
            field,
        )
    return key


def check_name(name: Any, field: str = "name", max_length: int = 200) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DomainError("Give it a name people recognise.", field)
    if len(name) > max_length:
        raise DomainError(f"The name is longer than {max_length} characters.", field)
    return name.strip()


def check_value(flag_type: str, value: Any, field: str) -> Any:
    """A variation's value must be of the flag's type: a number flag never serves a string."""
    if flag_type == FlagType.BOOLEAN:
        ok = isinstance(value, bool)
    elif flag_type == FlagType.NUMBER:
        ok = is_number(value)
    elif flag_type == FlagType.STRING:
        ok = isinstance(value, str) and len(value) <= MAX_STRING_VALUE
    elif flag_type == FlagType.JSON:
        ok = value is not None
    else:
        raise DomainError(f"Unknown flag type '{flag_type}'; use {', '.join(FlagType.values)}.")
    if not ok:
        wanted = {
            FlagType.BOOLEAN: "true or false",
            FlagType.NUMBER: "a finite number",
            FlagType.STRING: f"a string of at most {MAX_STRING_VALUE:,} characters",
            FlagType.JSON: "any JSON value but null",
        }[flag_type]
        raise DomainError(f"A {flag_type} flag's values must be {wanted}.", field)
    return value


def check_type(flag_type: Any) -> str:
    if flag_type not in FlagType.values:
        raise DomainError(
            f"Unknown flag type {flag_type!r}; use {', '.join(FlagType.values)}.", "type"
        )
    return flag_type


def _canonical(flag_type: str, value: Any) -> str:
    return repr(float(value)) if flag_type == FlagType.NUMBER else _json(value)


def check_variations(flag_type: str, variations: Any) -> list[dict[str, Any]]:
    """At least two variations with unique slug keys and distinct values of the flag's type."""
    if not isinstance(variations, list) or len(variations) < 2:
        raise DomainError(
            "A flag needs at least two variations (e.g. on and off), each a key and a value.",
            "variations",
        )
    if len(variations) > MAX_VARIATIONS:
        raise DomainError(f"A flag has at most {MAX_VARIATIONS} variations.", "variations")
    result, keys, values = [], set(), {}
    for i, v in enumerate(variations):
        where = f"variations[{i}]"
        if not isinstance(v, Mapping):
            raise DomainError("Each variation is an object with a key and a value.", where)
        key = check_key(v.get("key"), f"{where}.key", "A variation's key")
        if key in keys:
            raise DomainError(f"Variation keys must be unique ('{key}' repeats).", f"{where}.key")
        keys.add(key)
        value = check_value(flag_type, v.get("value"), f"{where}.value")
        canonical = _canonical(flag_type, value)
        if canonical in values:
            raise DomainError(
                f"Variations '{values[canonical]}' and '{key}' serve the same value: "
                "each variation must serve a different one.",
                f"{where}.value",
            )
        values[canonical] = key
        result.append({"key": key, "value": value})
    return result


def check_variation_key(keys: Sequence[str], key: Any, field: str, what: str) -> str:
    if key not in keys:
        raise DomainError(
            f"{what} must be one of the flag's variations ({', '.join(keys)}); got {key!r}.",
            field,
        )
    return key


def _prerequisite_graph(project: Project, key: str, own: list[dict[str, Any]]) -> dict[str, set]:
    graph: dict[str, set] = {}
    for other, prerequisites in Flag.objects.filter(project=project).values_list(
        "key", "prerequisites"
    ):
        graph[other] = {p.get("flag") for p in prerequisites or [] if isinstance(p, Mapping)}
    graph[key] = {p["flag"] for p in own}
    return graph


def _reaches(graph: Mapping[str, set], start: str, target: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def check_prerequisites(project: Project, key: str, prerequisites: Any) -> list[dict[str, Any]]:
    """Existing flags of the project and their variation keys; never the flag itself, and no
    cycle (A needs B needs A), however long."""
    if prerequisites is None:
        return []
    if not isinstance(prerequisites, list | tuple) or len(prerequisites) > 20:
        raise DomainError("Prerequisites are a list of at most 20 flags.", "prerequisites")
    result: list[dict[str, Any]] = []
    for i, p in enumerate(prerequisites):
        where = f"prerequisites[{i}]"
        if not isinstance(p, Mapping):
            raise DomainError('Each prerequisite is {"flag", "variations"}.', where)
        parent_key = p.get("flag")
        if parent_key == key:
            raise DomainError("A flag cannot be its own prerequisite.", f"{where}.flag")
        parent = Flag.objects.filter(project=project, key=parent_key).first()
        if parent is None or not isinstance(parent_key, str):
            raise DomainError(f"No flag {parent_key!r} in this project.", f"{where}.flag")
        if any(r["flag"] == parent_key for r in result):
            raise DomainError(f"'{parent_key}' is listed twice.", f"{where}.flag")
        wanted = p.get("variations")
        parent_keys = [v["key"] for v in parent.variations]
        if not isinstance(wanted, list) or not wanted:
            raise DomainError(
                f"List the variations of '{parent_key}' that let this flag be served.",
                f"{where}.variations",
            )
        for v in wanted:
            check_variation_key(parent_keys, v, f"{where}.variations", f"'{parent_key}' variation")
        result.append({"flag": parent_key, "variations": list(dict.fromkeys(wanted))})
    graph = _prerequisite_graph(project, key, result)
    for i, p in enumerate(result):
        if _reaches(graph, p["flag"], key):
            raise DomainError(
                f"'{p['flag']}' depends on '{key}' (directly or through other flags): "
                "prerequisites may not form a cycle.",
                f"prerequisites[{i}].flag",
            )
    _check_sdk_evaluations(graph, key)
    return result


# The most flag evaluations an SDK may make to serve one flag to one unit. The GrowthBook SDKs
# evaluate a prerequisite again on every path that leads to it (no reuse within a unit), so a
# graph of shared parents costs the number of its paths: flags each needing the two before them
# cost Fibonacci(depth) evaluations, and at 30 flags every client of the project would hang.
MAX_SDK_EVALUATIONS = 1000


def sdk_evaluations(graph: Mapping[str, set], key: str, memo: dict[str, int] | None = None) -> int:
    """How many flag evaluations an SDK makes to serve ``key`` (itself, then each prerequisite
    on every path; the graph has no cycle)."""
    memo = {} if memo is None else memo
    if key not in memo:
        memo[key] = 1 + sum(sdk_evaluations(graph, parent, memo) for parent in graph.get(key, ()))
    return memo[key]


def _check_sdk_evaluations(graph: Mapping[str, set], key: str) -> None:
    """The flag and every flag that needs it stay within ``MAX_SDK_EVALUATIONS``."""
    memo: dict[str, int] = {}
    for flag in sorted(graph):
        if not _reaches(graph, flag, key):
            continue  # its cost does not depend on this change
        count = sdk_evaluations(graph, flag, memo)
        if count > MAX_SDK_EVALUATIONS:
            raise DomainError(
                f"With these prerequisites an SDK would evaluate {count:,} flags to serve "
                f"'{flag}' to one unit (a prerequisite is evaluated again on every path that "
                f"leads to it); at most {MAX_SDK_EVALUATIONS:,}. Depend on fewer flags that "
                "share parents.",
                "prerequisites",
            )


def check_condition(condition: Any, field: str) -> dict[str, Any] | None:
    if condition in (None, {}):
        return None
    problems = validate_condition(condition)
    if problems:
        raise DomainError("Condition: " + " ".join(problems), field)
    return condition


def check_unit_ids(ids: Any, field: str) -> list[str]:
    if ids is None:
        return []
    if not isinstance(ids, list) or len(ids) > MAX_UNIT_IDS:
        raise DomainError(f"A list of at most {MAX_UNIT_IDS:,} unit ids.", field)
    result: list[str] = []
    for unit in ids:
        if isinstance(unit, int) and not isinstance(unit, bool):
            unit = str(unit)
        if not isinstance(unit, str) or not unit or len(unit) > UNIT_ID_MAX or "\x00" in unit:
            raise DomainError(
                f"Unit ids are non-empty texts of at most {UNIT_ID_MAX} characters.", field
            )
        result.append(unit)
    return list(dict.fromkeys(result))


def new_rule_id(taken: Iterable[str]) -> str:
    taken = set(taken)
    while True:
        candidate = uuid.uuid4().hex[:8]
        if candidate not in taken:
            return candidate


def _check_weights(keys: Sequence[str], weights: Any, field: str) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise DomainError('A rollout needs weights: {"<variation key>": share, ...}.', field)
    result: dict[str, float] = {}
    for key, share in weights.items():
        check_variation_key(keys, key, field, "Each weight's key")
        if not is_number(share) or not 0 <= share <= 1:
            raise DomainError(f"The share of '{key}' must be a number from 0 to 1.", field)
        result[key] = float(share)
    total = sum(result.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise DomainError(
            f"A rollout's shares must sum to 1; they sum to {total:g} "
            '(10% on: {"on": 0.1, "off": 0.9}).',
            field,
        )
    return {k: result[k] for k in keys if k in result}  # in the flag's variation order


def _check_experiment_rule(
    flag_keys: Sequence[str], environment: Environment, rule: Mapping[str, Any], where: str
) -> str:
    if not environment.production:
        raise DomainError(
            "Experiment rules are served in production only (staging and development serve "
            "flags, not experiments).",
            f"{where}.type",
        )
    key = rule.get("experiment")
    experiment = Experiment.objects.filter(project_id=environment.project_id, key=key).first()
    if experiment is None or not isinstance(key, str):
        raise DomainError(f"No experiment {key!r} in this project.", f"{where}.experiment")
    missing = [v for v in experiment.variants.values_list("key", flat=True) if v not in flag_keys]
    if missing:
        raise DomainError(
            f"Experiment '{key}' has variants that are not variations of this flag "
            f"({', '.join(missing)}): name the variants after the flag's variations.",
            f"{where}.experiment",
        )
    return key


def _check_rule(
    flag_keys: Sequence[str],
    environment: Environment,
    rule: Any,
    where: str,
    segments: set[str],
) -> dict[str, Any]:
    if not isinstance(rule, Mapping):
        raise DomainError("Each rule is an object with a type.", where)
    kind = rule.get("type")
    if kind not in RULE_TYPES:
        raise DomainError(f"A rule's type is one of {', '.join(RULE_TYPES)}.", f"{where}.type")
    unknown = sorted(set(rule) - RULE_FIELDS[kind])
    if unknown:
        raise DomainError(f"A {kind} rule has no field '{unknown[0]}'.", f"{where}.{unknown[0]}")
    out: dict[str, Any] = {"id": rule.get("id"), "type": kind}
    if kind == "experiment":
        out["experiment"] = _check_experiment_rule(flag_keys, environment, rule, where)
        return out
    condition = check_condition(rule.get("condition"), f"{where}.condition")
    if condition is not None:
        out["condition"] = condition
    segment = rule.get("segment")
    if segment not in (None, ""):
        if segment not in segments:
            raise DomainError(f"No segment {segment!r} in this project.", f"{where}.segment")
        out["segment"] = segment
    if kind == "force":
        out["variation"] = check_variation_key(
            flag_keys, rule.get("variation"), f"{where}.variation", "The variation"
        )
    else:
        attribute = rule.get("hash_attribute", "id")
        if not isinstance(attribute, str) or not ATTRIBUTE_RE.match(attribute):
            raise DomainError(
                "The hash attribute names the unit's attribute to bucket by (e.g. id, "
                "user_id, company.id): at most 64 letters, digits, _ - and .",
                f"{where}.hash_attribute",
            )
        out["hash_attribute"] = attribute
        out["weights"] = _check_weights(flag_keys, rule.get("weights"), f"{where}.weights")
    return out


def check_rules(
    flag_keys: Sequence[str], environment: Environment, rules: Any
) -> list[dict[str, Any]]:
    """The ordered rules of a flag in an environment, normalised: ids given or generated
    (short, unique in the list, kept on edits), known fields only, weights in the flag's
    variation order."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise DomainError("Rules are a list (first match wins).", "rules")
    if len(rules) > MAX_RULES:
        raise DomainError(f"A flag has at most {MAX_RULES} rules per environment.", "rules")
    segments = set(
        Segment.objects.filter(project_id=environment.project_id).values_list("key", flat=True)
    )
    result = [
        _check_rule(flag_keys, environment, rule, f"rules[{i}]", segments)
        for i, rule in enumerate(rules)
    ]
    seen: set[str] = set()
    for i, rule in enumerate(result):
        rule_id = rule["id"]
        if rule_id in (None, ""):
            continue
        if not isinstance(rule_id, str) or not RULE_ID_RE.match(rule_id):
            raise DomainError(
                "A rule id is at most 32 letters, digits, - and _ (leave it out to get one).",
                f"rules[{i}].id",
            )
        if rule_id in seen:
            raise DomainError(f"Rule id '{rule_id}' repeats.", f"rules[{i}].id")
        seen.add(rule_id)
    for rule in result:
        if rule["id"] in (None, ""):
            rule["id"] = new_rule_id(seen)
            seen.add(rule["id"])
    return result
