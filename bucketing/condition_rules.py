"""Validation of targeting conditions: `validate_condition` lists what is wrong with a condition
in words a person can act on, for forms and the API; a condition it accepts is one the SDKs
understand.

A regular expression is accepted only when RE2 (abacus's engine) and Python's ``re`` (the Python
SDK's engine) both compile it and it is at most ``MAX_REGEX_LENGTH`` characters.
"""

from __future__ import annotations

import math
import re
from typing import Any

import re2

from bucketing.condition_regex import MAX_REGEX_LENGTH, re2_compile, re2_error_text
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

_MAX_DEPTH = 32


def validate_condition(condition: Any) -> list[str]:
    """Human-readable problems with a targeting condition; empty when it is valid.

    Checks operator names, operand types, regular expressions and structure, so a condition that
    passes never fails silently in the SDKs because of a typo.
    """
    errors: list[str] = []
    if condition is None:
        return errors
    if not isinstance(condition, dict):
        return [f"The targeting condition must be an object, not {json_type(condition)}."]
    _check_condition(condition, "", errors, depth=0)
    return errors


def _where(path: str) -> str:
    return f" at {path}" if path else ""


def _check_condition(condition: dict[str, Any], path: str, errors: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        errors.append(f"The condition is nested too deeply{_where(path)}.")
        return
    for key, value in condition.items():
        here = f"{path}.{key}" if path else key
        if not isinstance(key, str) or not key:
            errors.append(f"Attribute names must be non-empty strings{_where(path)}.")
        elif key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                errors.append(f"{key} takes a list of conditions{_where(here)}.")
                continue
            for i, sub in enumerate(value):
                if not isinstance(sub, dict):
                    errors.append(f"{key} item {i} must be an object{_where(here)}.")
                else:
                    _check_condition(sub, f"{here}[{i}]", errors, depth + 1)
        elif key == "$not":
            if not isinstance(value, dict):
                errors.append(f"$not takes a condition object{_where(here)}.")
            else:
                _check_condition(value, here, errors, depth + 1)
        elif key.startswith("$"):
            errors.append(_unknown_operator(key, here, LOGICAL_OPERATORS))
        else:
            _check_value(value, here, errors, depth + 1)


def _unknown_operator(op: str, path: str, known: frozenset[str]) -> str:
    if op in ("$savedGroup", "$savedGroups", "$inGroup", "$notInGroup"):
        return f"Saved groups ({op}) are not supported{_where(path)}."
    if op in VALUE_OPERATORS and known is LOGICAL_OPERATORS:
        return (
            f'{op} compares an attribute\'s value: write {{"<attribute>": {{"{op}": ...}}}}'
            f"{_where(path)}."
        )
    if op in LOGICAL_OPERATORS - {"$not"} and known is VALUE_OPERATORS:
        return f"{op} combines conditions and cannot be used on an attribute{_where(path)}."
    return f"Unknown operator {op}{_where(path)}; expected one of {', '.join(sorted(known))}."


def _check_value(value: Any, path: str, errors: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        errors.append(f"The condition is nested too deeply{_where(path)}.")
        return
    if not isinstance(value, dict):
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"Numbers must be finite{_where(path)}.")
        return
    dollar = [k for k in value if isinstance(k, str) and k.startswith("$")]
    if dollar and len(dollar) != len(value):
        errors.append(
            f"An object mixes operators ({', '.join(dollar)}) with plain fields{_where(path)}: "
            "it would be compared as a literal object, never as operators."
        )
        return
    if not dollar:
        return  # literal object equality
    for op, operand in value.items():
        _check_operator(op, operand, f"{path}.{op}", errors, depth)


def _check_operator(op: str, operand: Any, path: str, errors: list[str], depth: int) -> None:
    kind = json_type(operand)
    if op not in VALUE_OPERATORS:
        errors.append(_unknown_operator(op, path, VALUE_OPERATORS))
    elif op in ("$eq", "$ne"):
        if kind in ("array", "object"):
            errors.append(f"{op} compares a single value, not an {kind}{_where(path)}.")
    elif op in ORDER_OPERATORS:
        if kind not in ("number", "string"):
            errors.append(f"{op} needs a number or a string, not {kind}{_where(path)}.")
        elif kind == "number" and not math.isfinite(operand):
            errors.append(f"{op} needs a finite number{_where(path)}.")
    elif op in VERSION_OPERATORS:
        if kind != "string":
            errors.append(f'{op} needs a version string such as "1.2.3", not {kind}{_where(path)}.')
    elif op in REGEX_OPERATORS:
        if kind != "string":
            errors.append(f"{op} needs a regular expression string, not {kind}{_where(path)}.")
        else:
            _check_regex(op, operand, path, errors)
    elif op in LIST_OPERATORS:
        if kind != "array":
            errors.append(f"{op} needs a list of values, not {kind}{_where(path)}.")
        elif op in ("$all", "$alli"):
            for i, item in enumerate(operand):
                _check_value(item, f"{path}[{i}]", errors, depth + 1)
    elif op == "$exists":
        if kind != "boolean":
            errors.append(f"$exists needs true or false, not {kind}{_where(path)}.")
    elif op == "$type":
        if operand not in TYPE_NAMES:
            errors.append(f"$type must be one of {', '.join(TYPE_NAMES)}{_where(path)}.")
    elif op == "$size":
        if kind == "number":
            if not (float(operand).is_integer() and operand >= 0):
                errors.append(f"$size needs a non-negative whole number{_where(path)}.")
        elif kind == "object":
            _check_value(operand, path, errors, depth + 1)
        else:
            errors.append(f"$size needs a number or operators, not {kind}{_where(path)}.")
    elif op == "$elemMatch":
        if kind != "object":
            errors.append(f"$elemMatch needs an object, not {kind}{_where(path)}.")
        elif _is_operator_object(operand) and not any(k in _CONDITION_OPERATORS for k in operand):
            _check_value(operand, path, errors, depth + 1)
        else:
            _check_condition(operand, path, errors, depth + 1)
    elif op == "$not":
        _check_value(operand, path, errors, depth + 1)


def _check_regex(op: str, pattern: str, path: str, errors: list[str]) -> None:
    """A pattern abacus evaluates (RE2) the way the SDKs do (Python's re compiles it too)."""
    if len(pattern) > MAX_REGEX_LENGTH:
        errors.append(
            f"{op} is {len(pattern)} characters long; the limit is {MAX_REGEX_LENGTH}"
            f"{_where(path)}."
        )
        return
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        errors.append(f"{op} has an invalid regular expression ({exc}){_where(path)}.")
        return
    try:
        re2_compile(pattern, op.endswith("i"))
    except re2.error as exc:
        errors.append(
            f"{op} uses syntax abacus does not evaluate ({re2_error_text(exc)}){_where(path)}: "
            "targeting patterns are RE2 syntax, without backreferences (\\1) or lookaround "
            "((?=...), (?!...), (?<=...), (?<!...)), so they run in linear time."
        )
