from django.db import migrations

TABLES = ("analysis_unitaggregate", "analysis_unitaggregatetop")


def by_bytes(apps, schema_editor):
    """PostgreSQL: the stored aggregates' unit ids compared by their bytes (collation "C").
    Their index is looked up once per new event of a snapshot; with the database's default
    collation (a libc locale) each comparison calls strcoll, about a third of those lookups'
    time (docs/benchmarks.md "incremental"). The statements compare them with the event
    tables' ids in "C" explicitly (analysis/sql/incremental.py). SQLite compares text by its
    bytes already."""
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(
                f'ALTER TABLE {table} ALTER COLUMN unit_id TYPE varchar(200) COLLATE "C"'
            )


def by_locale(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(
                f'ALTER TABLE {table} ALTER COLUMN unit_id TYPE varchar(200) COLLATE "default"'
            )


class Migration(migrations.Migration):
    dependencies = [("analysis", "0011_winsor_top_units")]

    operations = [migrations.RunPython(by_bytes, by_locale)]
