"""Metrics from event properties: a metric's ``filters`` (which of its events count, by their
``properties``) and ``value_property`` (the property whose number is the event's value), their
limits, and the one validation every writer calls (the metric service; the API and the form show
its refusals). The analysis compiles the cleaned filters to SQL (analysis/sql/properties.py).

A filter is ``{"property": name, "op": op, "value": value}`` on a top-level property of the
metric's events (docs/analysts.md "Metrics from event properties"):

- ``eq`` / ``neq``: equal (not equal) to a string, a number or a boolean, of the same JSON type
  (the number 3 is not the string "3"); ``neq`` is the exact complement of ``eq``, so an event
  without the property matches ``neq``;
- ``in``: equal to one of a list of such values;
- ``gt`` / ``gte`` / ``lt`` / ``lte``: a number compared with a number; an event whose property
  is missing or not a number does not match;
- ``contains``: a string property containing the text (case-sensitive), or a list property
  with the text as one of its elements.

All filters must match (AND)."""

import json
import math
import re
from typing import Any, NamedTuple

from core.errors import DomainError

OPS = ("eq", "neq", "in", "gt", "gte", "lt", "lte", "contains")
NUMERIC_OPS = ("gt", "gte", "lt", "lte")
MAX_FILTERS = 10
MAX_IN_VALUES = 100
MAX_TEXT_LENGTH = 200  # a filter's string value
# A property name: a top-level key of the events' properties. Ingestion refuses longer keys.
MAX_PROPERTY_NAME_LENGTH = 100
PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Metric kinds that read an event's value: the others count events (filters choose which).
VALUE_KINDS = ("mean", "ratio", "quantile")


class PropertyFilter(NamedTuple):
    """One cleaned filter; ``value`` is a tuple for ``in``."""

    property: str
    op: str
    value: Any


def _property_error(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a property name (a non-empty string)"
    if len(name) > MAX_PROPERTY_NAME_LENGTH:
        return f"is longer than {MAX_PROPERTY_NAME_LENGTH} characters"
    if not PROPERTY_NAME.fullmatch(name):
        return (
            f"'{name}' is not a property name: a letter or _ first, then letters, digits, _ . or -"
        )
    return None


def _scalar(value: Any, where: str) -> str | int | float | bool:
    """A value ``eq``, ``neq`` and ``in`` compare with: a string, a finite number or a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT_LENGTH:
            raise DomainError(f"{where} is longer than {MAX_TEXT_LENGTH} characters.", "filters")
        return value
    return _number(value, where, "a string, a number or true/false")


def _number(value: Any, where: str, expected: str = "a number") -> int | float:
    """The number as given (an int stays an int), once it is known to be a finite double."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return value
        raise DomainError(f"{where} must be a finite number.", "filters")
    raise DomainError(f"{where} must be {expected} (got {type(value).__name__}).", "filters")


def _value(op: str, value: Any, where: str) -> Any:
    if op == "in":
        if not isinstance(value, list) or not value:
            raise DomainError(
                f'{where} must be a non-empty list of values for \'in\' (e.g. ["pro", "team"]).',
                "filters",
            )
        if len(value) > MAX_IN_VALUES:
            raise DomainError(f"{where} lists more than {MAX_IN_VALUES} values.", "filters")
        return tuple(_scalar(v, f"{where}[{i}]") for i, v in enumerate(value))
    if op in NUMERIC_OPS:
        return _number(value, where, f"a number for '{op}'")
    if op == "contains":
        if not isinstance(value, str) or not value:
            raise DomainError(f"{where} must be a non-empty string for 'contains'.", "filters")
        return _scalar(value, where)
    return _scalar(value, where)


def clean_filters(filters: Any) -> list[PropertyFilter]:
    """The filters, checked; DomainError (field ``filters``) naming the first problem."""
    if filters is None:
        return []
    if not isinstance(filters, list | tuple):
        raise DomainError(
            'filters must be a list of {"property", "op", "value"} objects.', "filters"
        )
    if len(filters) > MAX_FILTERS:
        raise DomainError(f"A metric takes at most {MAX_FILTERS} filters.", "filters")
    cleaned = []
    for i, item in enumerate(filters):
        where = f"filters[{i}]"
        if not isinstance(item, dict) or set(item) != {"property", "op", "value"}:
            raise DomainError(
                f'{where} must be an object with exactly "property", "op" and "value".',
                "filters",
            )
        if error := _property_error(item["property"]):
            raise DomainError(f"{where}.property {error}.", "filters")
        op = item["op"]
        if op not in OPS:
            raise DomainError(f"{where}.op must be one of {', '.join(OPS)}.", "filters")
        value = _value(op, item["value"], f"{where}.value")
        cleaned.append(PropertyFilter(item["property"], op, value))
    return cleaned


def clean_value_property(name: Any, kind: str) -> str:
    """The value property ('' for none), checked against the metric's kind; DomainError (field
    ``value_property``) otherwise."""
    if name is None or name == "":
        return ""
    if error := _property_error(name):
        raise DomainError(f"value_property {error}.", "value_property")
    if kind not in VALUE_KINDS:
        raise DomainError(
            f"A {kind} metric counts events and reads no value: value_property applies to "
            f"{', '.join(VALUE_KINDS)} metrics (use filters to choose which events count).",
            "value_property",
        )
    return name


def stored_filters(filters: list[PropertyFilter]) -> list[dict[str, Any]]:
    """The cleaned filters as the model stores them (JSON: ``in`` values as a list)."""
    return [
        {"property": f.property, "op": f.op, "value": list(f.value) if f.op == "in" else f.value}
        for f in filters
    ]


_WORDS = {"eq": "=", "neq": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}


def describe_filters(filters: list[dict[str, Any]]) -> str:
    """Stored filters in words, e.g. ``plan in ["pro", "team"] and amount ≥ 2``."""
    words = []
    for f in filters:
        value = json.dumps(f["value"], ensure_ascii=False)
        words.append(f"{f['property']} {_WORDS.get(f['op'], f['op'])} {value}")
    return " and ".join(words)
