"""PostgreSQL only: the indexes that metrics from event properties read (docs/analysts.md
"Metrics from event properties"; analysis/sql/dialects.py ``PostgresDialect.property_events``).

``metricevent_unit_ts_props`` is ``metricevent_unit_ts`` with the properties included, so that a
filtered metric reads each unit's events index-only. A B-tree row holds at most 2704 bytes: the
index takes only events whose properties are small enough (jsonb takes at most about 5 bytes
per character of its text; the bound counts 6); ``metricevent_unit_ts_large`` finds the others,
whose properties are then read from the table. The analysis states these predicates word for
word (the planner uses a partial index only then).

Built CONCURRENTLY (the migration is not atomic), so ingestion is not blocked while a large
event table is indexed. SQLite has no covering indexes: its analysis always joins the table."""

from django.db import migrations

SIZE = "octet_length(unit_id) + octet_length(name) + 6 * octet_length(properties::text)"
INDEXES = {
    "metricevent_unit_ts_props": (
        "(project_id, unit_id, ts) INCLUDE (name, value, properties) "
        f"WHERE properties IS NULL OR {SIZE} <= 2400"
    ),
    "metricevent_unit_ts_large": (
        f"(project_id, unit_id, ts) INCLUDE (name, value) WHERE properties IS NOT NULL AND {SIZE} > 2400"
    ),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON assignments_metricevent {definition}"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("assignments", "0007_exposure_attributes"),
    ]

    operations = [migrations.RunPython(create, drop)]
