"""PostgreSQL only: the event tables partitioned by project and week, and the event-id ledger
(assignments/partitions.py has the layout; docs/operations.md "Event tables: partitions and
retention" has the cost). SQLite keeps its plain tables: nothing runs there, and Django's model
state is unchanged on both (the unique (project, event_id) constraints stay in the state: SQLite
has them, and PostgreSQL's ledger replaces them).

Forward, per table: rename it ``<table>_unpartitioned``; create the partitioned table with the
same columns and defaults (``id``: an identity column whose sequence continues from the old
one's value and then takes its name); create every project's partitions (its default and the
weeks holding rows of the last year, this week and the next two: older rows go to the
default); copy the rows (ids and values as they were); fill the ledger from the three tables
(the first table's row wins where two kinds share an id today: both rows are kept, the ledger
holds the id once, with the exposure's, else the flag exposure's, timestamp); check the row
counts are equal; drop the old table; build the indexes and foreign keys the old table had (the
same names; not the unique (project, event_id) one) and an index on id (no primary key:
``_ID_INDEX`` says why).
Reverse converts back to plain tables with the unique keys and drops the ledger.

The migration is one transaction: the event tables are locked (reads and writes wait) until it
commits, about a minute per few million rows (measured in docs/operations.md).
"""

import sys
import time
from datetime import UTC, datetime

from django.db import migrations

from assignments import partitions

TABLES = partitions.EVENT_TABLES
LEDGER = partitions.LEDGER
UNIQUE_EVENT = {
    "assignments_exposure": "exposure_unique_event",
    "assignments_flagexposure": "flag_exposure_unique_event",
    "assignments_metricevent": "metricevent_unique_event",
}
# No primary key: one on a partitioned table must hold the partition keys, and (id, project_id,
# ts) lured the planner into reading small partitions through it with conditions on its later
# columns. Ids are unique by their identity sequence; this index serves the incremental
# analysis' id ranges and watermarks (analysis/watermarks.py).
_ID_INDEX = "CREATE INDEX {table}_id ON public.{table} USING btree (id)"
HISTORY_WEEKS = 52  # weeks before this one that get their own partition when they hold rows

_LEDGER_DDL = f"""
CREATE TABLE {LEDGER} (
    project_id bigint NOT NULL,
    event_id varchar(200) NOT NULL,
    ts timestamptz NOT NULL,
    PRIMARY KEY (project_id, event_id)
) PARTITION BY LIST (project_id);
CREATE INDEX {LEDGER}_ts_brin ON {LEDGER} USING brin (ts);
"""

# The indexes that back no constraint, and the foreign keys: what the new table gets again.
_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
WHERE i.indrelid = %s::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY i.indexrelid
"""
_FOREIGN_KEYS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname
"""


_progress = {"on": True}  # off on an installation with no events: nothing worth saying


def _say(message: str) -> None:
    if _progress["on"]:
        sys.stdout.write(f"\n  {message}")
        sys.stdout.flush()


def _definitions(cursor, table):
    cursor.execute(_INDEXES, [table])
    # A partitioned table's index reads "ON ONLY <table>"; a plain table's "ON <table>".
    indexes = [sql.replace(" ON ONLY ", " ON ") for (sql,) in cursor.fetchall()]
    cursor.execute(_FOREIGN_KEYS, [table])
    keys = [f"ALTER TABLE {table} ADD CONSTRAINT {name} {sql}" for name, sql in cursor.fetchall()]
    return indexes + keys


def _named_using(sql):
    """("name", "USING ...") of a CREATE INDEX statement."""
    head, using = sql.split(" USING ", 1)
    return head.split(" ON ", 1)[0].split()[-1], using


def _sequence_state(cursor, table):
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    (sequence,) = cursor.fetchone()
    cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
    return sequence, cursor.fetchone()


def _continue_sequence(cursor, table, old_name, state):
    """The new table's identity sequence continues from the old one's value, under its name."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    (sequence,) = cursor.fetchone()
    cursor.execute("SELECT setval(%s, %s, %s)", [sequence, *state])
    if sequence != old_name:
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {old_name.split('.')[-1]}")


def _copy(cursor, source, target):
    started = time.monotonic()
    cursor.execute(f"INSERT INTO {target} SELECT * FROM {source}")
    copied = cursor.rowcount
    cursor.execute(f"SELECT count(*) FROM {source}")
    (expected,) = cursor.fetchone()
    if copied != expected:
        raise RuntimeError(f"{target}: copied {copied} rows of {expected}; nothing was changed")
    _say(f"{target}: {copied:,} rows copied in {time.monotonic() - started:.1f} s")


def _project_weeks(cursor, tables):
    since = partitions.week_start(datetime.now(UTC)) - partitions.WEEK * HISTORY_WEEKS
    weeks = {}
    for table in tables:
        for project_id, mondays in partitions.weeks_with_rows(cursor, table, since).items():
            weeks.setdefault(project_id, set()).update(mondays)
    return weeks


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(f"(SELECT 1 FROM {table} LIMIT 1)" for table in TABLES))
        _progress["on"] = bool(cursor.fetchall())
        saved = {}
        for table in TABLES:
            saved[table] = (_definitions(cursor, table), _sequence_state(cursor, table))
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
            cursor.execute(
                f"CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS "
                "INCLUDING IDENTITY INCLUDING STORAGE) PARTITION BY LIST (project_id)"
            )
        cursor.execute(_LEDGER_DDL)
        weeks = _project_weeks(cursor, [f"{table}_unpartitioned" for table in TABLES])
        cursor.execute("SELECT id FROM experiments_project ORDER BY id")
        for (project_id,) in cursor.fetchall():
            partitions.project_partitions_create(cursor, project_id, weeks.get(project_id, ()))
        for table in TABLES:
            _copy(cursor, f"{table}_unpartitioned", table)
            started = time.monotonic()
            cursor.execute(
                f"INSERT INTO {LEDGER} (project_id, event_id, ts) "
                f"SELECT project_id, event_id, ts FROM {table}_unpartitioned "
                "ORDER BY project_id, event_id ON CONFLICT DO NOTHING"
            )
            _say(
                f"{LEDGER}: {cursor.rowcount:,} ids of {table} in {time.monotonic() - started:.1f} s"
            )
        for table in TABLES:
            definitions, (sequence, state) = saved[table]
            cursor.execute(f"DROP TABLE {table}_unpartitioned")
            _continue_sequence(cursor, table, sequence, state)
            started = time.monotonic()
            definitions = [_ID_INDEX.format(table=table), *definitions]
            # Each partition's indexes named after the table's (partitions.indexes_create); the
            # table's own indexes, created next, adopt them.
            indexes = [_named_using(sql) for sql in definitions if sql.startswith("CREATE")]
            for leaf in partitions.leaves(cursor, table):
                partitions.indexes_create(cursor, indexes, leaf, table)
            for sql in definitions:
                cursor.execute(sql)
            _say(f"{table}: keys and indexes built in {time.monotonic() - started:.1f} s")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            id_index = _ID_INDEX.format(table=table)
            definitions = [sql for sql in _definitions(cursor, table) if sql != id_index]
            sequence, state = _sequence_state(cursor, table)
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
            cursor.execute(
                f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS "
                "INCLUDING IDENTITY INCLUDING STORAGE)"
            )
            _copy(cursor, f"{table}_partitioned", table)
            cursor.execute(f"DROP TABLE {table}_partitioned")
            _continue_sequence(cursor, table, sequence, state)
            cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            cursor.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {UNIQUE_EVENT[table]} "
                "UNIQUE (project_id, event_id)"
            )
            for sql in definitions:
                cursor.execute(sql)
        cursor.execute(f"DROP TABLE {LEDGER}")


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0009_holdout_exposure"),
        ("experiments", "0011_project_event_retention_days"),
    ]

    operations = [migrations.RunPython(forward, backward)]
