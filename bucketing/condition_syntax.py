"""The vocabulary of targeting conditions, shared by evaluation (`bucketing.conditions`) and
validation (`bucketing.condition_rules`): operator names and JSON type names."""

from __future__ import annotations

from typing import Any

# Keys that hold conditions rather than an attribute's operators.
_CONDITION_OPERATORS = ("$or", "$nor", "$and", "$savedGroup")

ORDER_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
VERSION_OPERATORS = ("$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte")
REGEX_OPERATORS = ("$regex", "$regexi", "$notRegex", "$notRegexi")
LIST_OPERATORS = ("$in", "$nin", "$ini", "$nini", "$all", "$alli")
VALUE_OPERATORS = frozenset(
    ("$eq", "$ne", "$exists", "$type", "$size", "$elemMatch", "$not")
    + ORDER_OPERATORS
    + VERSION_OPERATORS
    + REGEX_OPERATORS
    + LIST_OPERATORS
)
LOGICAL_OPERATORS = frozenset(("$and", "$or", "$nor", "$not"))
TYPE_NAMES = ("string", "number", "boolean", "array", "object", "null")


def _is_operator_object(obj: Any) -> bool:
    return isinstance(obj, dict) and all(key.startswith("$") for key in obj)


def json_type(value: Any) -> str:
    """The JSON type name ``$type`` compares with: null, boolean, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | set):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unknown"
