"""Metric filters and value properties (experiments/filters.py) as SQL over an event's JSON
``properties``, in any dialect.

Every name and value is a bound parameter (``bind`` returns its placeholder); the only literals
are the SQL the dialect writes. A predicate is never NULL: a property that is missing or of
another JSON type makes a comparison false (``neq`` is the exact complement of ``eq``, so it is
true there), and a numeric comparison with a non-number is false, never an error. Numbers are
compared as float8 on every engine, so PostgreSQL and SQLite agree.
"""

from collections.abc import Callable, Sequence

from analysis.sql.dialects import Dialect
from experiments.filters import NUMERIC_OPS, PropertyFilter

_COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class PropertySQL:
    """Writes filters and value properties over ``props`` (the properties column's SQL),
    binding each name and value through ``bind(value) -> placeholder``."""

    def __init__(self, d: Dialect, props: str, bind: Callable[[object], str]) -> None:
        self.d = d
        self.props = props
        self.bind = bind

    def _key(self, name: str) -> str:
        return self.bind(self.d.param_property(name))

    def _values(self, name: str, values: Sequence[object]) -> str:
        """The property equals one of ``values``, compared with a value of the same JSON type."""
        key, d = self._key(name), self.d
        groups = {
            "bool": [v for v in values if isinstance(v, bool)],
            "number": [float(v) for v in values if _is_number(v)],
            "text": [v for v in values if isinstance(v, str)],
        }
        parts = []
        for kind, group in groups.items():
            if group:
                bound = [self.bind(v if kind == "number" else d.param_scalar(v)) for v in group]
                parts.append(d.property_in(self.props, key, kind, bound))
        return " OR ".join(parts)

    def predicate(self, f: PropertyFilter) -> str:
        """One filter, true or false (never NULL)."""
        if f.op in ("eq", "neq", "in"):
            matches = self._values(f.property, f.value if f.op == "in" else (f.value,))
            held = f"COALESCE({matches}, FALSE)"
            return f"NOT {held}" if f.op == "neq" else held
        key = self._key(f.property)
        if f.op in NUMERIC_OPS:
            number = self.d.property_number(self.props, key)
            return f"COALESCE({number} {_COMPARISONS[f.op]} {self.bind(float(f.value))}, FALSE)"
        # contains: a string property containing the text, or a list holding it as an element
        text = self.d.text_contains(self.d.property_text(self.props, key), self.bind(f.value))
        element = self.d.list_contains_text(self.props, key, self.bind(f.value))
        return f"COALESCE({text}, FALSE) OR COALESCE({element}, FALSE)"

    def match(self, filters: Sequence[PropertyFilter]) -> str:
        """Every filter holds (true when there is none)."""
        return " AND ".join(f"({self.predicate(f)})" for f in filters) or "TRUE"

    def number(self, name: str) -> str:
        """The property's number (float8), NULL when it is missing or not a number."""
        return self.d.property_number(self.props, self._key(name))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
