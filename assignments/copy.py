"""PostgreSQL fast path for ingestion: COPY into temporary staging tables, then set-based INSERTs.

Per batch: one round trip makes sure the session's staging tables exist and are empty, one COPY
per event kind streams the validated rows, and one ``INSERT ... SELECT ... ON CONFLICT (project_id,
event_id) DO NOTHING`` per kind moves the new ones into the event tables (its row count is the
number accepted). Exposures are checked against stored assignments in the same statement, and
the first exposure of an unassigned unit becomes its assignment in one more statement. Flag
exposures count their flags' usage in the statement that moves them.

Every INSERT takes its rows in key order: two requests storing overlapping rows (a client
retrying a batch while the first attempt is still running) then wait for each other in the same
order and cannot deadlock; the loser's rows count as duplicates. The staging
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

# The correlated EXISTS probes the (experiment_id, unit_id) unique index once per exposure,
# whatever the planner thinks of the never-analyzed staging table.
_MOVE_EXPOSURES = """
INSERT INTO assignments_exposure
    (project_id, event_id, experiment_id, variant_id, unit_id, ts, assignment_mismatch,
     attributes, received_at)
SELECT %s, s.event_id, s.experiment_id, s.variant_id, s.unit_id, s.ts,
       EXISTS (SELECT 1 FROM assignments_assignment a
               WHERE a.experiment_id = s.experiment_id AND a.unit_id = s.unit_id
                 AND a.variant_id <> s.variant_id),
       s.attributes, %s
FROM abacus_staging_exposure s
ORDER BY s.event_id COLLATE "C"
ON CONFLICT (project_id, event_id) DO NOTHING
"""

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
INSERT INTO assignments_metricevent
    (project_id, event_id, name, unit_id, value, ts, properties, received_at)
SELECT %s, event_id, name, unit_id, value, ts, properties, %s
FROM abacus_staging_metricevent
ORDER BY event_id COLLATE "C"
ON CONFLICT (project_id, event_id) DO NOTHING
"""

# New flag exposures, and their count per flag, variation and day added to the usage rows: the
# answer is the number of new exposures.
_MOVE_FLAG_EXPOSURES = (
    """
WITH moved AS (
    INSERT INTO assignments_flagexposure
        (project_id, event_id, environment_id, flag_id, variation, unit_id, ts, received_at)
    SELECT %s, event_id, environment_id, flag_id, variation, unit_id, ts, %s
    FROM abacus_staging_flagexposure
    ORDER BY event_id COLLATE "C"
    ON CONFLICT (project_id, event_id) DO NOTHING
    RETURNING flag_id, environment_id, variation, ts
), counted AS ("""
    + USAGE_FROM_MOVED_PG
    + """)
SELECT count(*) FROM moved
"""
)


def _copy_rows(raw: Any, table: str, rows: Iterable[tuple]) -> None:
    """Stream rows (tuples in the table's column order) into a staging table with COPY."""
    with raw.copy(f"COPY {table} FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def copy_events(*, project_id: int, batch: Any) -> int:
    """Store a validated `assignments.services.EventBatch`; return how many events were new.

    Must run inside a transaction. The batch's rows are tuples in the staging tables' column
    order, already free of in-batch duplicates.
    """
    now = timezone.now()
    inserted = 0
    with connection.cursor() as cursor:
        cursor.execute(_STAGING)
        raw = cursor.cursor  # the psycopg 3 cursor: COPY needs it
        if batch.exposures:
            _copy_rows(raw, "abacus_staging_exposure", batch.exposures.values())
            cursor.execute(_MOVE_EXPOSURES, [project_id, now])
            new_exposures = cursor.rowcount
            inserted += new_exposures
            if new_exposures and batch.running_phases:
                cursor.execute(
                    _ASSIGN_FROM_EXPOSURES,
                    [now, list(batch.running_phases), list(batch.running_phases.values())],
                )
        if batch.metrics:
            _copy_rows(raw, "abacus_staging_metricevent", batch.metrics.values())
            cursor.execute(_MOVE_METRICS, [project_id, now])
            inserted += cursor.rowcount
        if batch.flag_exposures:
            _copy_rows(raw, "abacus_staging_flagexposure", batch.flag_exposures.values())
            cursor.execute(_MOVE_FLAG_EXPOSURES, [project_id, now])
            inserted += cursor.fetchone()[0]
    return inserted
