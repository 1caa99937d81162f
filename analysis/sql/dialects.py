"""Everything in the aggregation SQL that differs between database engines, one class per engine.

The statement builders (``analysis/sql/builders.py``) write only SQL that every engine reads the
same way, and ask a ``Dialect`` for each piece that is not: the parameter placeholder, time
arithmetic, the float type, conditional aggregates, LEAST, quantiles, reading an event's JSON
properties, the planner hints, whether per-unit index lookups (a LATERAL join) exist, and,
outside the SQL, how parameters are adapted,
whether a failed statement leaves the transaction usable and which failures are a metric's fault.

``dialect_for(connection)`` picks the class from Django's ``connection.vendor``; it is the only
place that looks at the vendor. Another engine (e.g. ClickHouse) is one more subclass of
``Dialect`` registered in ``DIALECTS``: the builders do not change.
"""

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from django.db import DatabaseError, InterfaceError, OperationalError, transaction


class Dialect:
    """The portable defaults; an engine overrides what it spells differently.

    Every method in ``SQL_HOOKS`` returns a SQL fragment (the other methods never render SQL)."""

    vendor: ClassVar[str] = ""
    supports_index_lookup: ClassVar[bool] = False  # LATERAL joins and index catalogue reads
    SQL_HOOKS: ClassVar[tuple[str, ...]] = (
        "param",
        "instant",
        "shift",
        "double",
        "count_if",
        "sum_if",
        "least",
        "quantiles",
        "property_text",
        "property_number",
        "property_bool",
        "text_contains",
        "list_contains_text",
        "property_in",
        "property_events",
        "attribute_level",
        "binary_order",
        "fence",
        "materialized",
    )

    def __init__(self, connection: Any = None) -> None:
        self.connection = connection

    # --- parameters ---------------------------------------------------------------------------

    def param(self, name: str) -> str:
        """The placeholder of a bound parameter (Django's cursors take pyformat everywhere)."""
        return f"%({name})s"

    def param_ts(self, value: datetime) -> object:
        """A datetime parameter comparable with a stored timestamp."""
        return value

    # --- time arithmetic ----------------------------------------------------------------------

    def instant(self, column: str) -> str:
        """A timestamp column (or aggregate of one) as a value ``shift`` can move exactly."""
        raise NotImplementedError

    def shift(self, instant: str, hours: int) -> str:
        """``instant + hours`` (hours may be negative), in the representation of ``instant``."""
        raise NotImplementedError

    # --- values and aggregates ----------------------------------------------------------------

    def double(self, expr: str) -> str:
        """A float8 value: PostgreSQL would otherwise sum the numeric type, several times slower."""
        return f"CAST({expr} AS DOUBLE PRECISION)"

    def count_if(self, condition: str) -> str:
        """COUNT of the rows that match; FILTER skips the aggregate's work for the others."""
        return f"COUNT(*) FILTER (WHERE {condition})"

    def sum_if(self, expr: str, condition: str) -> str:
        """SUM of ``expr`` over the rows that match (NULL when none does)."""
        return f"SUM({expr}) FILTER (WHERE {condition})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})"

    def quantiles(self, columns: Sequence[tuple[str, float]], source: str, where: str) -> str:
        """A one-row SELECT of each column's q-quantile over ``source`` rows matching ``where``,
        named ``cap_<column>``: linear interpolation between order statistics (Hyndman-Fan 7,
        PostgreSQL's ``percentile_cont``). ``q`` is a float the caller has checked."""
        raise NotImplementedError

    # --- event properties (a JSON object column; analysis/sql/properties.py) -------------------
    # ``props`` is the column, ``key`` the placeholder of a top-level property's key as
    # ``param_property`` adapts it. Each value is NULL when the property is missing or of
    # another JSON type, so a comparison with it is never true and never an error.

    def param_property(self, name: str) -> object:
        """The parameter that names a top-level property (a checked identifier-like name)."""
        return name

    def property_text(self, props: str, key: str) -> str:
        """A string property's text."""
        raise NotImplementedError

    def property_number(self, props: str, key: str) -> str:
        """A number property as a float8 (integers and decimals alike)."""
        raise NotImplementedError

    def property_bool(self, props: str, key: str) -> str:
        """A boolean property as the text 'true' or 'false'."""
        raise NotImplementedError

    def text_contains(self, text: str, needle: str) -> str:
        """Whether ``needle`` occurs in ``text`` (case-sensitive; NULL when text is NULL)."""
        raise NotImplementedError

    def list_contains_text(self, props: str, key: str, needle: str) -> str:
        """Whether the property is a list with the string ``needle`` as one of its elements."""
        raise NotImplementedError

    def param_scalar(self, value: str | bool) -> object:
        """A string or boolean that ``property_in`` compares a property with."""
        return value if isinstance(value, str) else ("true" if value else "false")

    def property_in(self, props: str, key: str, kind: str, values: Sequence[str]) -> str:
        """Whether the property equals one of ``values`` (placeholders) of one JSON type:
        ``kind`` "text" and "bool" (values as ``param_scalar`` adapts them) or "number"
        (floats). NULL when the property is missing or of another type."""
        accessor = {
            "text": self.property_text,
            "bool": self.property_bool,
            "number": self.property_number,
        }[kind]
        return f"{accessor(props, key)} IN ({', '.join(values)})"

    def attribute_level(self, attributes: str, key: str) -> str:
        """A top-level attribute of an exposure as a breakdown level: the text of a string, the
        JSON text of a number, 'true' or 'false'; NULL when missing, null, an object or a list.
        ``key`` as ``param_property`` adapts it."""
        raise NotImplementedError

    def binary_order(self, expr: str) -> str:
        """``expr`` ordered by its bytes (the same order on every engine)."""
        raise NotImplementedError

    def default_collation(self, expr: str) -> str:
        """A text ``expr`` in the database's default collation (that of the event tables'
        columns; the stored aggregates' unit ids compare by bytes: binary_order)."""
        return expr

    def property_events(self, columns: str, where: str, unindexed: bool = True) -> str:
        """A subquery of the events ``e`` matching ``where``, with ``columns`` (properties
        among them), for one unit's index lookup; ``unindexed``: whether the project may have
        events whose properties no index holds (``unindexed_properties``)."""
        return f"(SELECT {columns} FROM assignments_metricevent e WHERE {where})"

    def unindexed_properties(self, cursor: Any, project_id: int) -> bool:
        """Whether the project has events whose properties the covering index does not hold."""
        return True

    # --- planner hints ------------------------------------------------------------------------

    def fence(self) -> str:
        """A clause that keeps a subquery's computed columns computed once per row: without it
        the planner inlines them into every aggregate that reads them."""
        raise NotImplementedError

    def materialized(self) -> str:
        """The keyword (with a trailing space) that computes a CTE once though two steps read it."""
        return "MATERIALIZED "

    # --- outside the SQL ----------------------------------------------------------------------

    def index_columns(self, cursor: Any, table: str) -> list[list[str]]:
        """The key and included columns of each index on ``table`` that holds every row (not
        a partial index), in order."""
        return []

    def statement_scope(self) -> contextlib.AbstractContextManager:
        """Wraps one statement so that its failure leaves the caller's transaction usable."""
        return transaction.atomic(using=self.connection.alias)

    def is_per_metric_failure(self, exc: DatabaseError) -> bool:
        """Whether a failed statement may be the fault of one metric's data or SQL (retry metric
        by metric) rather than of the database (unreachable, timed out, locked: re-raise).

        psycopg raises DataError (22xxx, e.g. overflow), ProgrammingError (42xxx), ... for those;
        an OperationalError is a lost connection, a statement timeout or a cancelled query."""
        return not isinstance(exc, InterfaceError | OperationalError)


class PostgresDialect(Dialect):
    vendor = "postgresql"
    supports_index_lookup = True

    _INDEX_COLUMNS = """
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = %(table)s::regclass AND i.indpred IS NULL
    GROUP BY i.indexrelid
"""

    def instant(self, column: str) -> str:
        return column

    def shift(self, instant: str, hours: int) -> str:
        return f"({instant} + INTERVAL '{int(hours)} hours')"

    def quantiles(self, columns: Sequence[tuple[str, float]], source: str, where: str) -> str:
        parts = [
            f"percentile_cont({float(q)!r}) WITHIN GROUP (ORDER BY {name}) AS cap_{name}"
            for name, q in columns
        ]
        return f"SELECT {', '.join(parts)} FROM {source} WHERE {where}"

    def property_text(self, props: str, key: str) -> str:
        k = f"CAST({key} AS TEXT)"
        return f"CASE WHEN jsonb_typeof({props} -> {k}) = 'string' THEN {props} ->> {k} END"

    def property_number(self, props: str, key: str) -> str:
        k = f"CAST({key} AS TEXT)"
        return (
            f"CASE WHEN jsonb_typeof({props} -> {k}) = 'number'"
            f" THEN CAST({props} ->> {k} AS DOUBLE PRECISION) END"
        )

    def property_bool(self, props: str, key: str) -> str:
        k = f"CAST({key} AS TEXT)"
        return f"CASE WHEN jsonb_typeof({props} -> {k}) = 'boolean' THEN {props} ->> {k} END"

    def text_contains(self, text: str, needle: str) -> str:
        return f"strpos({text}, CAST({needle} AS TEXT)) > 0"

    def list_contains_text(self, props: str, key: str, needle: str) -> str:
        k = f"CAST({key} AS TEXT)"
        return (
            f"(jsonb_typeof({props} -> {k}) = 'array'"
            f" AND {props} -> {k} @> jsonb_build_array(CAST({needle} AS TEXT)))"
        )

    def param_scalar(self, value: str | bool) -> object:
        return json.dumps(value)  # compared as jsonb: one lookup of the key, type included

    def property_in(self, props: str, key: str, kind: str, values: Sequence[str]) -> str:
        if kind == "number":  # as float8, as SQLite compares them
            return super().property_in(props, key, kind, values)
        listed = ", ".join(f"CAST({v} AS JSONB)" for v in values)
        return f"{props} -> CAST({key} AS TEXT) IN ({listed})"

    def attribute_level(self, attributes: str, key: str) -> str:
        k = f"CAST({key} AS TEXT)"
        return (
            f"CASE WHEN jsonb_typeof({attributes} -> {k}) IN ('string', 'number', 'boolean')"
            f" THEN {attributes} ->> {k} END"
        )

    def binary_order(self, expr: str) -> str:
        return f'{expr} COLLATE "C"'

    def default_collation(self, expr: str) -> str:
        return f'{expr} COLLATE "default"'

    # Which events' properties the covering index metricevent_unit_ts_props holds (its
    # predicate, from migration assignments/0008: a bound on the index row that keeps it under
    # the B-tree's 2704 bytes: jsonb takes at most about 5 bytes per character of its text) and
    # which ones only the partial index metricevent_unit_ts_large finds. The planner uses a
    # partial index only for a query that states its predicate, word for word.
    PROPERTIES_IN_INDEX = (
        "(e.properties IS NULL OR octet_length(e.unit_id) + octet_length(e.name)"
        " + 6 * octet_length(e.properties::text) <= 2400)"
    )
    PROPERTIES_OUTSIDE_INDEX = (
        "(e.properties IS NOT NULL AND octet_length(e.unit_id) + octet_length(e.name)"
        " + 6 * octet_length(e.properties::text) > 2400)"
    )

    def property_events(self, columns: str, where: str, unindexed: bool = True) -> str:
        # Index-only for the events whose properties the index holds (nearly all), and, when the
        # project has any, the larger ones from the table: a second scan per unit, which costs
        # about a sixth of the statement, so it is left out when there are none.
        indexed = (
            f"SELECT {columns} FROM assignments_metricevent e"
            f" WHERE {where} AND {self.PROPERTIES_IN_INDEX}"
        )
        if not unindexed:
            return f"({indexed})"
        return (
            f"({indexed} UNION ALL SELECT {columns} FROM assignments_metricevent e"
            f" WHERE {where} AND {self.PROPERTIES_OUTSIDE_INDEX})"
        )

    def unindexed_properties(self, cursor: Any, project_id: int) -> bool:
        # One probe of the (usually empty) partial index metricevent_unit_ts_large.
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM assignments_metricevent e WHERE e.project_id = %s"
            f" AND {self.PROPERTIES_OUTSIDE_INDEX})",
            [project_id],
        )
        return bool(cursor.fetchone()[0])

    def fence(self) -> str:
        return "OFFSET 0"

    def index_columns(self, cursor: Any, table: str) -> list[list[str]]:
        cursor.execute(self._INDEX_COLUMNS, {"table": table})
        return [list(columns) for (columns,) in cursor.fetchall()]


class SqliteDialect(Dialect):
    """SQLite stores timestamps as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'."""

    vendor = "sqlite"

    def __init__(self, connection: Any = None, version: tuple[int, ...] | None = None) -> None:
        super().__init__(connection)
        self.version = version if version is not None else sqlite3.sqlite_version_info

    def param_ts(self, value: datetime) -> object:
        return self.connection.ops.adapt_datetimefield_value(value)

    def instant(self, column: str) -> str:
        # Integer microseconds since the epoch: julianday's float would blur the boundaries.
        return (
            f"(CAST(strftime('%%s', {column}) AS INTEGER) * 1000000"
            f" + CAST(substr({column}, 21, 6) AS INTEGER))"
        )

    def shift(self, instant: str, hours: int) -> str:
        return f"({instant} + {int(hours) * 3_600_000_000})"

    def least(self, a: str, b: str) -> str:
        return f"MIN({a}, {b})"

    def quantiles(self, columns: Sequence[tuple[str, float]], source: str, where: str) -> str:
        # No percentile_cont: the same formula over ROW_NUMBER(), one scalar subquery a column.
        return f"SELECT {', '.join(self._quantile(n, float(q), source, where) for n, q in columns)}"

    @staticmethod
    def _quantile(name: str, q: float, source: str, where: str) -> str:
        h = f"((n - 1) * {q!r})"  # 0-based position of the quantile
        return f"""(SELECT lo + (h - CAST(h AS INTEGER)) * (COALESCE(hi, lo) - lo) FROM (
                    SELECT MAX(CASE WHEN r = CAST({h} AS INTEGER) THEN x END) AS lo,
                           MAX(CASE WHEN r = CAST({h} AS INTEGER) + 1 THEN x END) AS hi,
                           MAX({h}) AS h
                    FROM (SELECT {name} AS x, ROW_NUMBER() OVER (ORDER BY {name}) - 1 AS r,
                                 COUNT(*) OVER () AS n FROM {source} WHERE {where})))
                    AS cap_{name}"""

    def param_property(self, name: str) -> object:
        # A JSON path; the quoted label takes the name as written (dots and dashes included).
        return f'$."{name}"'

    def property_text(self, props: str, key: str) -> str:
        return f"CASE WHEN json_type({props}, {key}) = 'text' THEN json_extract({props}, {key}) END"

    def property_number(self, props: str, key: str) -> str:
        return (
            f"CASE WHEN json_type({props}, {key}) IN ('integer', 'real')"
            f" THEN CAST(json_extract({props}, {key}) AS REAL) END"
        )

    def property_bool(self, props: str, key: str) -> str:
        return (
            f"CASE WHEN json_type({props}, {key}) IN ('true', 'false')"
            f" THEN json_type({props}, {key}) END"
        )

    def text_contains(self, text: str, needle: str) -> str:
        return f"instr({text}, {needle}) > 0"

    def list_contains_text(self, props: str, key: str, needle: str) -> str:
        return (
            f"(json_type({props}, {key}) = 'array' AND EXISTS (SELECT 1 FROM json_each({props},"
            f" {key}) AS item WHERE item.type = 'text' AND item.value = {needle}))"
        )

    def attribute_level(self, attributes: str, key: str) -> str:
        return (
            f"CASE json_type({attributes}, {key})"
            f" WHEN 'text' THEN json_extract({attributes}, {key})"
            f" WHEN 'integer' THEN CAST(json_extract({attributes}, {key}) AS TEXT)"
            f" WHEN 'real' THEN CAST(json_extract({attributes}, {key}) AS TEXT)"
            f" WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END"
        )

    def binary_order(self, expr: str) -> str:
        return expr  # SQLite compares text by its bytes (BINARY) unless told otherwise

    def fence(self) -> str:
        return "LIMIT -1 OFFSET 0"

    def materialized(self) -> str:
        return "MATERIALIZED " if self.version >= (3, 35) else ""

    def statement_scope(self) -> contextlib.AbstractContextManager:
        # SQLite leaves its transaction usable after a failed statement (and a new atomic block
        # there would take the write lock): no savepoint needed.
        return contextlib.nullcontext()

    def is_per_metric_failure(self, exc: DatabaseError) -> bool:
        # SQLite reports SQL errors as OperationalError too; only a busy or broken file is not one.
        if isinstance(exc, InterfaceError):
            return False
        message = str(exc).lower()
        return not any(word in message for word in ("locked", "busy", "disk i/o", "unable to open"))


DIALECTS: dict[str, type[Dialect]] = {"postgresql": PostgresDialect, "sqlite": SqliteDialect}


def dialect_for(connection: Any) -> Dialect:
    """The dialect of a Django connection (the one place that reads ``connection.vendor``)."""
    try:
        return DIALECTS[connection.vendor](connection)
    except KeyError:
        raise NotImplementedError(
            f"the aggregation has no SQL dialect for {connection.vendor!r}"
        ) from None
