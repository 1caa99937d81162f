"""Everything in the aggregation SQL that differs between database engines, one class per engine.

The statement builders (``analysis/sql/builders.py``) write only SQL that every engine reads the
same way, and ask a ``Dialect`` for each piece that is not: the parameter placeholder, time
arithmetic, the float type, conditional aggregates, LEAST, quantiles, the planner hints, whether
per-unit index lookups (a LATERAL join) exist, and, outside the SQL, how parameters are adapted,
whether a failed statement leaves the transaction usable and which failures are a metric's fault.

``dialect_for(connection)`` picks the class from Django's ``connection.vendor``; it is the only
place that looks at the vendor. Another engine (e.g. ClickHouse) is one more subclass of
``Dialect`` registered in ``DIALECTS``: the builders do not change.
"""

import contextlib
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
        """The key and included columns of each index on ``table``, in order."""
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
    WHERE i.indrelid = %(table)s::regclass
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
