"""PostgreSQL fast path: COPY into a temporary staging table, then INSERT ... ON CONFLICT."""

import json
from typing import Any

from django.db import connection
from django.utils import timezone

from assignments.models import Exposure, MetricEvent

_COLUMNS = {
    Exposure: ("project_id", "event_id", "experiment_id", "variant_id", "unit_id", "ts"),
    MetricEvent: ("project_id", "event_id", "name", "unit_id", "value", "ts", "properties"),
}


def copy_insert(model: type, rows: list[Any]) -> int:
    """Stage rows with COPY and move the new ones in; returns the number inserted.

    Must run inside a transaction (the staging table is dropped on commit).
    """
    table = model._meta.db_table
    columns = _COLUMNS[model]
    staging = f"staging_{table}"
    now = timezone.now()
    column_list = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {column_list} FROM {table} WITH NO DATA"
        )
        raw = cursor.cursor  # the psycopg 3 cursor: COPY needs it
        with raw.copy(f"COPY {staging} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                values = []
                for column in columns:
                    value = getattr(row, column)
                    if column == "properties" and value is not None:
                        value = json.dumps(value)
                    values.append(value)
                copy.write_row(values)
        cursor.execute(
            f"INSERT INTO {table} ({column_list}, received_at) "
            f"SELECT DISTINCT ON (project_id, event_id) {column_list}, %s FROM {staging} "
            f"ON CONFLICT (project_id, event_id) DO NOTHING",
            [now],
        )
        inserted = cursor.rowcount
        cursor.execute(f"TRUNCATE {staging}")
    return inserted
