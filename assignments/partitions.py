"""PostgreSQL's layout of the event tables: one partition per project, weekly partitions in it.

Each event table (``EVENT_TABLES``) is ``PARTITION BY LIST (project_id)``; a project's partition
``<table>_p<project>`` is ``PARTITION BY RANGE (ts)`` with a partition per week (Monday 00:00
UTC to the next Monday, ``<table>_p<project>_w<yyyymmdd>``) and a ``<table>_p<project>_default``
for timestamps no week covers. The event-id ledger (``LEDGER``: project_id, event_id, ts; primary
key (project_id, event_id)) is LIST-partitioned by project only: it makes one event id one event
of the project, across the three tables and every week (a unique key of a partitioned table
must include the partition keys, so the event tables themselves cannot hold it).

Locks, measured on PostgreSQL 15: ``CREATE TABLE ... PARTITION OF`` takes an ACCESS EXCLUSIVE
lock on the parent, which would stop every read and write of the table until the creating
transaction commits. So partitions are built detached and then attached (``ATTACH PARTITION``
takes SHARE UPDATE EXCLUSIVE: reads and inserts go on). Dropping a partition takes ACCESS
EXCLUSIVE on its parent: a week is dropped with a short ``lock_timeout`` (the project's own
partition is the parent: other projects never wait), and a deleted project's rows are
TRUNCATEd in its deleting transaction (locks only its partitions) and its empty tables dropped
after commit (``project_partitions_drop``), or by the next maintenance if that times out.

SQLite keeps plain tables: nothing here runs there (``partitioned`` is False).
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

EVENT_TABLES = ("assignments_exposure", "assignments_flagexposure", "assignments_metricevent")
LEDGER = "assignments_eventid"
WEEK = timedelta(days=7)
WEEKS_AHEAD = 2  # weekly partitions exist for this week and the next two
# DDL that would queue behind a long query gives up (and blocks nobody meanwhile); the next
# hour's maintenance tries again.
LOCK_TIMEOUT = "2s"


@contextmanager
def short_lock_wait(cursor: Any) -> Iterator[None]:
    """``lock_timeout`` for the DDL inside, then the transaction's own setting again."""
    cursor.execute("SELECT current_setting('lock_timeout')")
    (previous,) = cursor.fetchone()
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
    yield
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


def week_start(at: datetime) -> datetime:
    """Monday 00:00 UTC of the week holding ``at``."""
    day = at.astimezone(UTC).date()
    monday = day - timedelta(days=day.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def project_partition(table: str, project_id: int) -> str:
    return f"{table}_p{int(project_id)}"


def week_partition(table: str, project_id: int, monday: datetime) -> str:
    return f"{project_partition(table, project_id)}_w{monday:%Y%m%d}"


def default_partition(table: str, project_id: int) -> str:
    return f"{project_partition(table, project_id)}_default"


@contextmanager
def checks_done(cursor: Any) -> Iterator[None]:
    """Run the transaction's deferred foreign-key checks first: PostgreSQL refuses to TRUNCATE
    or ALTER a table with checks still pending (events stored earlier in the same transaction,
    as a test or a command may do), and Django's foreign keys are INITIALLY DEFERRED."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    yield
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def partitioned(cursor: Any) -> bool:
    """Whether this database has the partitioned layout (PostgreSQL after migration
    assignments 0010; never SQLite)."""
    if cursor.db.vendor != "postgresql":
        return False
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [LEDGER])
    return bool(cursor.fetchone()[0])


def secondary_indexes(cursor: Any, table: str) -> list[tuple[str, str]]:
    """(name, "USING ..." with its columns and predicate) of each index of ``table`` other than
    its primary key."""
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary ORDER BY c.relname",
        [table],
    )
    return [(name, sql.split(" USING ", 1)[1]) for name, sql in cursor.fetchall()]


def indexes_create(cursor: Any, indexes: list[tuple[str, str]], target: str, table: str) -> None:
    """The indexes on ``target``, a partition of ``table`` (or about to be), named after the
    parent's: ``<index>_p<project>_w<yyyymmdd>``, so plans name the index they use (an
    attach adopts an equal index instead of building its own, auto-named one)."""
    suffix = target[len(table) + 1 :]
    for name, using in indexes:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {name}_{suffix} ON {target} USING {using}")


def leaves(cursor: Any, table: str) -> list[str]:
    cursor.execute(
        "SELECT relid::regclass::text FROM pg_partition_tree(to_regclass(%s)) "
        "WHERE isleaf ORDER BY 1",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def _children(cursor: Any, parent: str) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
        [parent],
    )
    return [name for (name,) in cursor.fetchall()]


def project_ids_with_partitions(cursor: Any) -> set[int]:
    """The projects whose ledger partition exists (every project's does, and only theirs)."""
    prefix = f"{LEDGER}_p"
    return {int(name[len(prefix) :]) for name in _children(cursor, LEDGER)}


def weeks_of(cursor: Any, table: str, project_id: int) -> dict[datetime, str]:
    """The project's weekly partitions of ``table``, by their Monday."""
    prefix = project_partition(table, project_id) + "_w"
    weeks = {}
    for name in _children(cursor, project_partition(table, project_id)):
        if name.startswith(prefix):
            day = datetime.strptime(name[len(prefix) :], "%Y%m%d").date()
            weeks[datetime(day.year, day.month, day.day, tzinfo=UTC)] = name
    return weeks


@dataclass
class PartitionChanges:
    """What a call created, dropped and moved (names of tables; rows)."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0  # rows moved from a default partition into a new week

    def add(self, other: "PartitionChanges") -> None:
        self.created += other.created
        self.dropped += other.dropped
        self.moved += other.moved


def project_partitions_create(
    cursor: Any, project_id: int, weeks: Iterable[datetime] | None = None
) -> PartitionChanges:
    """Create the project's partitions if missing: its ledger partition and, in each event
    table, the project's partition with its default; with ``weeks`` (Mondays), also this
    week's, the next ``WEEKS_AHEAD`` and those weeks' partitions. A new project gets no weeks
    here (seven tables, not sixteen: its first events land in the default, and the maintenance
    queued after its creation moves them into the weeks it makes). Built detached, then
    attached (see the module docstring). Must run in a transaction."""
    with short_lock_wait(cursor):
        changes = _project_tables_create(cursor, project_id)
        if weeks is not None:
            changes.add(weeks_create(cursor, project_id, weeks))
    return changes


def _project_tables_create(cursor: Any, project_id: int) -> PartitionChanges:
    changes = PartitionChanges()
    if to_regclass(cursor, project_partition(LEDGER, project_id)) is None:
        name = project_partition(LEDGER, project_id)
        cursor.execute(f"CREATE TABLE {name} (LIKE {LEDGER})")
        cursor.execute(
            f"ALTER TABLE {LEDGER} ATTACH PARTITION {name} FOR VALUES IN ({int(project_id)})"
        )
        changes.created.append(name)
    for table in EVENT_TABLES:
        parent = project_partition(table, project_id)
        if to_regclass(cursor, parent) is None:
            default = default_partition(table, project_id)
            cursor.execute(f"CREATE TABLE {parent} (LIKE {table}) PARTITION BY RANGE (ts)")
            cursor.execute(f"CREATE TABLE {default} PARTITION OF {parent} DEFAULT")
            indexes_create(cursor, secondary_indexes(cursor, table), default, table)
            cursor.execute(
                f"ALTER TABLE {table} ATTACH PARTITION {parent} FOR VALUES IN ({int(project_id)})"
            )
            changes.created += [parent, default]
    return changes


def weeks_create(
    cursor: Any, project_id: int, weeks: Iterable[datetime] = (), now: datetime | None = None
) -> PartitionChanges:
    """This week's, the next ``WEEKS_AHEAD`` weeks' and ``weeks``' partitions of the project,
    where missing. Rows of a new week already in the default partition move into it (in this
    transaction: a week cannot be attached while the default holds rows of its range)."""
    this_week = week_start(now or datetime.now(UTC))
    wanted = {this_week + WEEK * i for i in range(WEEKS_AHEAD + 1)} | {week_start(w) for w in weeks}
    changes = PartitionChanges()
    for table in EVENT_TABLES:
        existing = weeks_of(cursor, table, project_id)
        for monday in sorted(wanted - set(existing)):
            changes.moved += _week_create(cursor, table, project_id, monday)
            changes.created.append(week_partition(table, project_id, monday))
    return changes


def _week_create(cursor: Any, table: str, project_id: int, monday: datetime) -> int:
    """Create and attach one week; returns the rows moved into it from the default."""
    parent = project_partition(table, project_id)
    default = default_partition(table, project_id)
    name = week_partition(table, project_id, monday)
    bounds = [monday, monday + WEEK]
    cursor.execute(f"CREATE TABLE {name} (LIKE {table})")
    # The rows of this week in the default move first: the attach checks the default holds
    # none (a scan of the default, under its lock; the default is small: see weeks_create).
    cursor.execute(
        f"WITH moved AS (DELETE FROM {default} WHERE ts >= %s AND ts < %s RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved",
        bounds,
    )
    moved = cursor.rowcount
    indexes_create(cursor, secondary_indexes(cursor, table), name, table)
    with checks_done(cursor):
        cursor.execute(
            f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", bounds
        )
    return moved


def weeks_expired(cursor: Any, project_id: int, cutoff: datetime) -> list[tuple[str, str]]:
    """(table, partition) of the project's weeks that end at or before ``cutoff``."""
    return [
        (table, name)
        for table in EVENT_TABLES
        for monday, name in sorted(weeks_of(cursor, table, project_id).items())
        if monday + WEEK <= cutoff
    ]


def week_drop(cursor: Any, name: str) -> None:
    """Drop one weekly partition (ACCESS EXCLUSIVE on the project's partition for an instant;
    gives up after two seconds). Must run in a transaction."""
    with short_lock_wait(cursor):
        cursor.execute(f"DROP TABLE IF EXISTS {name}")


def project_partitions_truncate(cursor: Any, project_id: int) -> None:
    """Empty the project's partitions at once (a deleted project's events: TRUNCATE locks only
    its own partitions; a DELETE would take as long as the project has events)."""
    names = [
        project_partition(table, project_id)
        for table in (*EVENT_TABLES, LEDGER)
        if to_regclass(cursor, project_partition(table, project_id)) is not None
    ]
    if names:
        with checks_done(cursor):
            cursor.execute(f"TRUNCATE {', '.join(names)}")


def project_partitions_drop(cursor: Any, project_id: int) -> list[str]:
    """Drop the project's partitions (ACCESS EXCLUSIVE on each table for an instant; gives up
    after two seconds). Must run in a transaction. Returns the dropped names."""
    dropped = []
    with short_lock_wait(cursor):
        for table in (*EVENT_TABLES, LEDGER):
            name = project_partition(table, project_id)
            if to_regclass(cursor, name) is not None:
                cursor.execute(f"DROP TABLE {name}")
                dropped.append(name)
    return dropped


def to_regclass(cursor: Any, name: str) -> str | None:
    cursor.execute("SELECT to_regclass(%s)::text", [name])
    return cursor.fetchone()[0]


def weeks_with_rows(cursor: Any, table: str, since: datetime) -> dict[int, set[datetime]]:
    """project id -> the Mondays of the weeks since ``since`` that hold rows of ``table`` (a
    scan of the table: the conversion's question, not the hot path's)."""
    cursor.execute(
        f"SELECT DISTINCT project_id, date_trunc('week', ts AT TIME ZONE 'UTC')::date "
        f"FROM {table} WHERE ts >= %s",
        [since],
    )
    found: dict[int, set[datetime]] = {}
    for project_id, monday in cursor.fetchall():
        found.setdefault(project_id, set()).add(_midnight(monday))
    return found


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
