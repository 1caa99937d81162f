"""Targeting conditions in GrowthBook's MongoDB-like syntax: evaluation and validation.

`eval_condition(attributes, condition)` gives the same answer as the official SDK's
``evalCondition`` (growthbook 4.x, whose semantics follow the JS SDK): keys are dotted paths into
the attributes (a list exposes ``length`` and its indices), a plain value means strict JSON
equality, and a dict whose keys all start with ``$`` is a set of operators that must all pass.
Comparisons never coerce types (``5`` does not equal ``"5"``, ``True`` is not ``1``), only two
numbers or two strings can be ordered, and a missing attribute is ``None``. An operator this module
does not know makes the whole condition fail, and so does a malformed condition (the SDK catches
the same errors). Saved groups are not an abacus feature: ``$inGroup`` sees every group as empty.

`validate_condition(condition)` lists what is wrong with a condition in words a person can act
on, for forms and the API; a condition it accepts is one the SDKs understand. It lives in
`bucketing.condition_rules`, the RE2 engine and its limits in `bucketing.condition_regex`, the
operator names in `bucketing.condition_syntax`; this module re-exports their public names.

Regular expressions (``$regex`` and friends) run on RE2 (google-re2), whose matching time is linear
in the pattern and the text: no pattern can backtrack for seconds, as ``(a+)+$`` does in Python's
``re`` or JavaScript. RE2 has no backreferences or lookaround, so a pattern is accepted at save time
only when RE2 and Python's ``re`` (the Python SDK's engine) both compile it and it is at most
``MAX_REGEX_LENGTH`` characters; an attribute longer than ``MAX_REGEX_SUBJECT_LENGTH`` characters
never matches (``$notRegex`` passes). docs/operations.md "Targeting regular expressions" lists
the remaining differences between the engines.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bucketing.condition_regex import (
    MAX_REGEX_LENGTH,
    MAX_REGEX_SUBJECT_LENGTH,
    _regex_search,
    re2_compile,
    re2_error_text,
)
from bucketing.condition_rules import validate_condition
from bucketing.condition_syntax import (
    _CONDITION_OPERATORS,
    LIST_OPERATORS,
    LOGICAL_OPERATORS,
    ORDER_OPERATORS,
    REGEX_OPERATORS,
    TYPE_NAMES,
    VALUE_OPERATORS,
    VERSION_OPERATORS,
    _is_operator_object,
    json_type,
)
from bucketing.hashing import js_number_to_string

__all__ = [
    "LIST_OPERATORS",
    "LOGICAL_OPERATORS",
    "MAX_REGEX_LENGTH",
    "MAX_REGEX_SUBJECT_LENGTH",
    "ORDER_OPERATORS",
    "REGEX_OPERATORS",
    "TYPE_NAMES",
    "VALUE_OPERATORS",
    "VERSION_OPERATORS",
    "eval_condition",
    "get_path",
    "is_in",
    "json_type",
    "padded_version",
    "re2_compile",
    "re2_error_text",
    "validate_condition",
]

# A branch's result: True, False, or None when it depends on an operator nobody knows.
_Tri = bool | None

_EVAL_ERRORS = (TypeError, ValueError, AttributeError, IndexError, RecursionError)


def eval_condition(attributes: dict[str, Any], condition: dict[str, Any]) -> bool:
    """Whether ``attributes`` satisfy ``condition`` (an empty condition always passes)."""
    try:
        return _eval(attributes, condition) is True
    except _EVAL_ERRORS:
        # A malformed condition fails as a whole, so $not cannot turn an error into a match.
        return False


def _negate(r: _Tri) -> _Tri:
    return None if r is None else not r


def _eval(attributes: Any, condition: dict[str, Any]) -> _Tri:
    result: _Tri = True
    for key, value in condition.items():
        if key == "$or":
            r = _eval_or(attributes, value)
        elif key == "$nor":
            r = _negate(_eval_or(attributes, value))
        elif key == "$and":
            r = _eval_and(attributes, value)
        elif key == "$not":
            r = _negate(_eval(attributes, value))
        elif key == "$savedGroup" or key == "$savedGroups":
            r = False
        else:
            r = _eval_value(value, get_path(attributes, key))
        if r is False:
            return False
        if r is None:
            result = None
    return result


def _eval_or(attributes: Any, conditions: Any) -> _Tri:
    if len(conditions) == 0:
        return True
    result: _Tri = False
    for condition in conditions:
        r = _eval(attributes, condition)
        if r is True:
            return True
        if r is None:
            result = None
    return result


def _eval_and(attributes: Any, conditions: Any) -> _Tri:
    result: _Tri = True
    for condition in conditions:
        r = _eval(attributes, condition)
        if r is False:
            return False
        if r is None:
            result = None
    return result


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_canonical_index(key: str, length: int) -> bool:
    return (
        len(key) <= 10
        and key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and int(key) < length
    )


def get_path(attributes: Any, path: str) -> Any:
    """The value at a dotted ``path`` (None when absent); lists expose indices and ``length``."""
    current = attributes
    for segment in path.split("."):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment == "length":
            current = len(current)
        elif isinstance(current, list) and _is_canonical_index(segment, len(current)):
            current = current[int(segment)]
        else:
            return None
    return current


def _eval_value(condition_value: Any, value: Any, insensitive: bool = False) -> _Tri:
    if _is_operator_object(condition_value):
        result: _Tri = True
        for op, operand in condition_value.items():
            r = _eval_operator(op, value, operand)
            if r is False:
                return False
            if r is None:
                result = None
        return result
    if insensitive and isinstance(condition_value, str) and isinstance(value, str):
        return condition_value.lower() == value.lower()
    return _deep_equal(condition_value, value)


def _json_value(v: Any) -> Any:
    # JSON.stringify writes NaN and the infinities as null.
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _js_key_order(obj: dict[Any, Any]) -> list[Any]:
    """JS property order: array-index-like keys ascending, then the rest as inserted."""
    indices = [k for k in obj if isinstance(k, str) and _is_canonical_index(k, 2**32 - 1)]
    others = [k for k in obj if not (isinstance(k, str) and _is_canonical_index(k, 2**32 - 1))]
    return sorted(indices, key=int) + others


def _deep_equal(a: Any, b: Any) -> bool:
    """Implicit equality: JSON types must match at every level (1.0 equals 1, True is not 1)."""
    ta = json_type(a)
    if ta != json_type(b):
        return False
    if ta == "array":
        return len(a) == len(b) and all(
            _deep_equal(_json_value(x), _json_value(y)) for x, y in zip(a, b, strict=False)
        )
    if ta == "object":
        return _js_key_order(a) == _js_key_order(b) and all(
            _deep_equal(_json_value(a[k]), _json_value(b[k])) for k in a
        )
    return bool(a == b)


def _strict_equal(a: Any, b: Any) -> bool:
    """JS ``===``: containers from two JSON documents are never the same object."""
    ta = json_type(a)
    if ta != json_type(b) or ta == "array" or ta == "object":
        return False
    return bool(a == b)


def _compare(a: Any, b: Any) -> int:
    if (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        raise ValueError("NaN is unordered")
    if isinstance(a, str) and isinstance(b, str) and not (a.isascii() and b.isascii()):
        # JS compares strings by UTF-16 code unit, which big-endian UTF-16 bytes preserve.
        a16 = a.encode("utf-16-be", "surrogatepass")
        b16 = b.encode("utf-16-be", "surrogatepass")
        return (a16 > b16) - (a16 < b16)
    return (a > b) - (a < b)


def _eval_operator(op: str, value: Any, operand: Any) -> _Tri:
    if op == "$eq":
        return _strict_equal(value, operand)
    if op == "$ne":
        return not _strict_equal(value, operand)
    if op in ORDER_OPERATORS:
        return _eval_order(op, value, operand)
    if op in VERSION_OPERATORS:
        return _eval_version(op, value, operand)
    if op in REGEX_OPERATORS:
        found = _regex_search(operand, op.endswith("i"), value)
        if op.startswith("$notRegex"):
            # A missing or non-string attribute does not match, so $notRegex passes.
            return True if found is None else not found
        return bool(found)
    if op in ("$in", "$nin", "$ini", "$nini"):
        if not isinstance(operand, list):
            return False
        found = is_in(operand, value, insensitive=op in ("$ini", "$nini"))
        return found if op in ("$in", "$ini") else not found
    if op == "$elemMatch":
        return _elem_match(operand, value)
    if op == "$size":
        if not isinstance(value, list):
            return False
        return _eval_value(operand, len(value))
    if op in ("$all", "$alli"):
        if not isinstance(operand, list):
            return False
        return _is_in_all(operand, value, insensitive=op == "$alli")
    if op == "$exists":
        return (value is not None) if operand else (value is None)
    if op == "$type":
        return json_type(value) == operand
    if op == "$not":
        return _negate(_eval_value(operand, value))
    if op in ("$inGroup", "$notInGroup"):
        # No saved groups in abacus: every group is empty.
        if not isinstance(operand, str):
            return False
        return op == "$notInGroup"
    if op in _CONDITION_OPERATORS:
        return False
    return None


def _eval_order(op: str, value: Any, operand: Any) -> bool:
    """``$gt``, ``$gte``, ``$lt``, ``$lte``: two numbers or two strings, never coerced."""
    if not (
        (_is_number(value) and _is_number(operand))
        or (isinstance(value, str) and isinstance(operand, str))
    ):
        return False
    try:
        c = _compare(value, operand)
    except ValueError:
        return False
    if op == "$lt":
        return c < 0
    if op == "$lte":
        return c <= 0
    if op == "$gt":
        return c > 0
    return c >= 0


def _eval_version(op: str, value: Any, operand: Any) -> bool:
    """``$veq`` and friends: both sides as padded version strings (`padded_version`)."""
    if not (
        (_is_number(value) and _is_number(operand))
        or (isinstance(value, str) and isinstance(operand, str))
    ):
        return op == "$vne"
    actual = padded_version(value)
    expected = padded_version(operand)
    if op == "$veq":
        return actual == expected
    if op == "$vne":
        return actual != expected
    if op == "$vlt":
        return actual < expected
    if op == "$vlte":
        return actual <= expected
    if op == "$vgt":
        return actual > expected
    return actual >= expected


def _elem_match(condition: Any, value: Any) -> _Tri:
    if not isinstance(value, list):
        return False
    # Operators test each element; a condition (even one of only $or/$and) tests its fields.
    on_value = _is_operator_object(condition) and not any(
        k in _CONDITION_OPERATORS for k in condition
    )
    result: _Tri = False
    for item in value:
        if item is None:
            continue
        r = _eval_value(condition, item) if on_value else _eval(item, condition)
        if r is True:
            return True
        if r is None:
            result = None
    return result


def _is_in_all(conditions: list[Any], value: Any, insensitive: bool) -> _Tri:
    if not isinstance(value, list):
        return False
    result: _Tri = True
    for cond in conditions:
        passed: _Tri = False
        for item in value:
            r = _eval_value(cond, item, insensitive)
            if r is True:
                passed = True
                break
            if r is None:
                passed = None
        if passed is False:
            return False
        if passed is None:
            result = None
    return result


def _contains_exact(values: list[Any], value: Any) -> bool:
    """``value in values`` without Python's True == 1 / False == 0 aliasing."""
    start = 0
    while True:
        try:
            index = values.index(value, start)
        except ValueError:
            return False
        if isinstance(values[index], bool) == isinstance(value, bool):
            return True
        start = index + 1


def is_in(candidates: list[Any], value: Any, insensitive: bool = False) -> bool:
    """``$in``: ``value`` (or, for a list, any of its items) is one of ``candidates``."""
    if insensitive:

        def fold(v: Any) -> Any:
            return v.lower() if isinstance(v, str) else v

        items = value if isinstance(value, list) else [value]
        return any(_strict_equal(fold(x), fold(c)) for x in items for c in candidates)
    if isinstance(value, list):
        try:
            matches = set(candidates) & set(value)
            if not matches or matches.difference((0, 1)):
                return bool(matches)
            return any(_contains_exact(candidates, v) for v in value if v == 0 or v == 1)
        except TypeError:
            # Unhashable items (objects, arrays): compare pairwise.
            return any(_strict_equal(x, c) for x in value for c in candidates)
    if isinstance(value, dict):
        return False
    if value == 0 or value == 1:
        return _contains_exact(candidates, value)
    if isinstance(value, str) and len(candidates) > _SET_MIN:
        return value in _as_set(candidates)
    return value in candidates


# Long `$in` lists (a segment's include list of thousands of unit ids) are looked up in a set
# made once per list: a string equals only an equal string, in Python as in the SDKs' strict
# equality, so membership is the same. Conditions are built once per served definition and
# not mutated; the cache holds the list itself and re-checks identity and length.
_SET_MIN = 32
_SET_CACHE_MAX = 512
_sets: dict[int, tuple[list[Any], int, frozenset[str]]] = {}


def _as_set(candidates: list[Any]) -> frozenset[str]:
    entry = _sets.get(id(candidates))
    if entry is not None and entry[0] is candidates and entry[1] == len(candidates):
        return entry[2]
    members = frozenset(c for c in candidates if isinstance(c, str))
    if len(_sets) >= _SET_CACHE_MAX:
        _sets.clear()
    _sets[id(candidates)] = (candidates, len(candidates), members)
    return members


# --- version strings ----------------------------------------------------------------------------

_VERSION_STRIP = re.compile(r"(^v|\+.*$)")
_VERSION_SPLIT = re.compile(r"[-.]")


def padded_version(value: Any) -> str:
    """A version string padded so plain string order is SemVer order (the SDK's rule)."""
    if _is_number(value):
        value = js_number_to_string(value)
    if not value or not isinstance(value, str):
        value = "0"
    parts = _VERSION_SPLIT.split(_VERSION_STRIP.sub("", value))
    if len(parts) == 3:
        parts.append("~")  # "1.0.0" sorts after "1.0.0-beta"
    return "-".join(p.rjust(5, " ") if p.isdigit() else p for p in parts)
