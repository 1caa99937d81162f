"""PostgreSQL fast path for ingestion: COPY into temporary staging tables, then set-based INSERTs.

Per batch: one round trip makes sure the session's staging tables exist and are empty, one COPY
per event kind streams the validated rows, and one statement stores them: an ``INSERT ... ON
CONFLICT DO NOTHING RETURNING event_id`` into the event-id ledger (``assignments_eventid``,
primary key (project_id, event_id)) takes the batch's ids that are new to the project, and one
INSERT per kind moves the rows with those ids into the (partitioned) event tables; it answers
how many of each kind were new. Exposures are checked against stored assignments in the same
statement, and the first exposure of an unassigned unit becomes its assignment in one more
statement. Flag exposures count their flags' usage in the statement that moves them.

The ledger INSERT takes its rows in key order: two requests storing overlapping ids (a client
retrying a batch while the first attempt is still running) then wait for each other in the same
order and cannot deadlock; the loser's ids count as duplicates. The event tables have no unique
index on PostgreSQL (it could not span their weekly partitions): the ledger is the key. The staging
tables are ``ON COMMIT DELETE ROWS`` temporary tables: private to the session, never
WAL-logged, emptied at commit; they are also emptied before use because a caller's outer
transaction (tests, a management command) may hold several batches.
"""

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.utils import timezone

from assignments.services.flag_usage import USAGE_FROM_MOVED_PG

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS abacus_staging_exposure (
    event_id varchar(200), experiment_id bigint, variant_id bigint, unit_id varchar(200),
    ts timestamptz, attributes jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS abacus_staging_metricevent (
    event_id varchar(200), name varchar(200), unit_id varchar(200), value double precision,
    ts timestamptz, properties jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS abacus_staging_flagexposure (
    event_id varchar(200), environment_id bigint, flag_id bigint, variation varchar(100),
    unit_id varchar(200), ts timestamptz
) ON COMMIT DELETE ROWS;
DELETE FROM abacus_staging_exposure;
DELETE FROM abacus_staging_metricevent;
DELETE FROM abacus_staging_flagexposure;
"""

# The batch's new event ids: one INSERT into the project's event-id ledger, in key order (two
# requests storing overlapping ids, e.g. a batch and its retry, take the ledger's row locks in
# the same order and cannot deadlock; the loser's ids count as duplicates). The ledger's primary
# key (project_id, event_id) is what makes an id one event of the project across the three
# tables and every weekly partition (assignments/partitions.py).
_FRESH = """
fresh AS (
    INSERT INTO assignments_eventid (project_id, event_id, ts)
    SELECT %(project)s, s.event_id, s.ts FROM ({staged}) AS s
    ORDER BY s.event_id COLLATE "C"
    ON CONFLICT (project_id, event_id) DO NOTHING
    RETURNING event_id
)"""
_STAGED = {
    "exposures": "SELECT event_id, ts FROM abacus_staging_exposure",
    "metrics": "SELECT event_id, ts FROM abacus_staging_metricevent",
    "flag_exposures": "SELECT event_id, ts FROM abacus_staging_flagexposure",
}

# The correlated EXISTS probes the (experiment_id, unit_id) unique index once per exposure,
# whatever the planner thinks of the never-analyzed staging table.
_MOVE_EXPOSURES = """
exposures AS (
    INSERT INTO assignments_exposure
        (project_id, event_id, experiment_id, variant_id, unit_id, ts, assignment_mismatch,
         attributes, received_at)
    SELECT %(project)s, s.event_id, s.experiment_id, s.variant_id, s.unit_id, s.ts,
           EXISTS (SELECT 1 FROM assignments_assignment a
                   WHERE a.experiment_id = s.experiment_id AND a.unit_id = s.unit_id
                     AND a.variant_id <> s.variant_id),
           s.attributes, %(now)s
    FROM abacus_staging_exposure s JOIN fresh f ON f.event_id = s.event_id
    RETURNING 1
)"""

# The earliest exposure of each unit in each running experiment, for units not yet assigned.
# Rows go in (experiment_id, unit_id) byte order, the order /assign inserts in too.
_ASSIGN_FROM_EXPOSURES = """
INSERT INTO assignments_assignment (experiment_id, unit_id, variant_id, phase, assigned_at)
SELECT DISTINCT ON (s.experiment_id, s.unit_id COLLATE "C")
       s.experiment_id, s.unit_id, s.variant_id, r.phase, %s
FROM abacus_staging_exposure s
JOIN unnest(%s::bigint[], %s::integer[]) AS r(experiment_id, phase)
  ON r.experiment_id = s.experiment_id
ORDER BY s.experiment_id, s.unit_id COLLATE "C", s.ts
ON CONFLICT (experiment_id, unit_id) DO NOTHING
"""

_MOVE_METRICS = """
metrics AS (
    INSERT INTO assignments_metricevent
        (project_id, event_id, name, unit_id, value, ts, properties, received_at)
    SELECT %(project)s, s.event_id, s.name, s.unit_id, s.value, s.ts, s.properties, %(now)s
    FROM abacus_staging_metricevent s JOIN fresh f ON f.event_id = s.event_id
    RETURNING 1
)"""

# New flag exposures, and their count per flag, variation and day added to the usage rows.
_MOVE_FLAG_EXPOSURES = (
    """
moved AS (
    INSERT INTO assignments_flagexposure
        (project_id, event_id, environment_id, flag_id, variation, unit_id, ts, received_at)
    SELECT %(project)s, s.event_id, s.environment_id, s.flag_id, s.variation, s.unit_id, s.ts,
           %(now)s
    FROM abacus_staging_flagexposure s JOIN fresh f ON f.event_id = s.event_id
    RETURNING flag_id, environment_id, variation, ts
), counted AS ("""
    + USAGE_FROM_MOVED_PG
    + ")"
)
# kind -> (the CTE moving it, the count of its new rows)
_MOVES = {
    "exposures": (_MOVE_EXPOSURES, "(SELECT count(*) FROM exposures)"),
    "metrics": (_MOVE_METRICS, "(SELECT count(*) FROM metrics)"),
    "flag_exposures": (_MOVE_FLAG_EXPOSURES, "(SELECT count(*) FROM moved)"),
}


def _store_sql(kinds: list[str]) -> str:
    """One statement: the ledger takes the batch's ids, then each kind's rows whose id it took
    move into their table; answers the new rows of each kind (in ``kinds``' order)."""
    staged = " UNION ALL ".join(_STAGED[kind] for kind in kinds)
    ctes = [_FRESH.format(staged=staged), *(_MOVES[kind][0] for kind in kinds)]
    return "WITH " + ",".join(ctes) + "\nSELECT " + ", ".join(_MOVES[k][1] for k in kinds)


def _copy_rows(raw: Any, table: str, rows: Iterable[tuple]) -> None:
    """Stream rows (tuples in the table's column order) into a staging table with COPY."""
    with raw.copy(f"COPY {table} FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def copy_events(*, project_id: int, batch: Any) -> int:
    """Store a validated `assignments.services.EventBatch`; return how many events were new.

    Must run inside a transaction. The batch's rows are tuples in the staging tables' column
    order, already free of in-batch duplicates (across kinds too).
    """
    now = timezone.now()
    staged = {
        "exposures": ("abacus_staging_exposure", batch.exposures),
        "metrics": ("abacus_staging_metricevent", batch.metrics),
        "flag_exposures": ("abacus_staging_flagexposure", batch.flag_exposures),
    }
    kinds = [kind for kind, (_, rows) in staged.items() if rows]
    if not kinds:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_STAGING)
        raw = cursor.cursor  # the psycopg 3 cursor: COPY needs it
        for kind in kinds:
            table, rows = staged[kind]
            _copy_rows(raw, table, rows.values())
        cursor.execute(_store_sql(kinds), {"project": project_id, "now": now})
        new = dict(zip(kinds, cursor.fetchone(), strict=True))
        if new.get("exposures") and batch.running_phases:
            cursor.execute(
                _ASSIGN_FROM_EXPOSURES,
                [now, list(batch.running_phases), list(batch.running_phases.values())],
            )
    return sum(new.values())
