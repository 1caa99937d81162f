"""The conversion to partitioned event tables (migration assignments 0010) on a copy with data:
migrate back to 0009 (plain tables), store events of the three kinds across weeks and projects,
migrate forward, and check that every row survived with its id and values, the ledger knows
every id, and new events get fresh ids; then back and forward again."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from assignments import partitions
from assignments.services import events_ingest
from experiments.models import Environment
from experiments.services import metric_create, project_create
from flags.services.flags import flag_create
from tests.factories import running_experiment

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the conversion runs on PostgreSQL only"
    ),
    pytest.mark.django_db(transaction=True),
]

COLUMNS = {
    "assignments_exposure": "id, project_id, event_id, experiment_id, variant_id, unit_id, ts, "
    "assignment_mismatch, attributes, received_at",
    "assignments_flagexposure": "id, project_id, event_id, environment_id, flag_id, variation, "
    "unit_id, ts, received_at",
    "assignments_metricevent": "id, project_id, event_id, name, unit_id, value, ts, properties, "
    "received_at",
}


def _rows():
    rows = {}
    with connection.cursor() as cursor:
        for table, columns in COLUMNS.items():
            cursor.execute(f"SELECT {columns} FROM {table} ORDER BY id")
            rows[table] = cursor.fetchall()
    return rows


def _insert(table, columns, values):
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(values[0]))})",
            values,
        )


def _old_history(shop, other, experiment, flag, environment):
    """Events as an installation before the conversion holds them (plain tables)."""
    now = timezone.now()
    variant = experiment.variants.get(key="treatment")
    weeks = [now - timedelta(weeks=w, hours=w) for w in (0, 1, 3, 8)]
    ancient = now - timedelta(weeks=200)  # before every weekly partition: the default
    _insert(
        "assignments_exposure",
        "project_id, event_id, experiment_id, variant_id, unit_id, ts, assignment_mismatch, "
        "attributes, received_at",
        [
            (shop.pk, f"x{i}", experiment.pk, variant.pk, f"u{i}", ts, i == 2, '{"c": "de"}', now)
            for i, ts in enumerate([*weeks, ancient])
        ]
        + [(shop.pk, "shared", experiment.pk, variant.pk, "u9", weeks[1], False, None, now)],
    )
    _insert(
        "assignments_flagexposure",
        "project_id, event_id, environment_id, flag_id, variation, unit_id, ts, received_at",
        [
            (shop.pk, f"f{i}", environment.pk, flag.pk, "true", "u1", ts, now)
            for i, ts in enumerate(weeks)
        ],
    )
    _insert(
        "assignments_metricevent",
        "project_id, event_id, name, unit_id, value, ts, properties, received_at",
        [
            (project.pk, f"m{i}", "buy", f"u{i}", 1.5 * i, ts, '{"p": 1}' if i else None, now)
            for project in (shop, other)
            for i, ts in enumerate([*weeks, ancient])
        ]
        # Two kinds sharing an id today (the probe's race): both rows are kept.
        + [(shop.pk, "shared", "buy", "u9", 2.0, weeks[2], None, now)],
    )


def test_the_conversion_keeps_every_event_and_fills_the_ledger():
    shop = project_create(slug="shop", name="Shop")
    other = project_create(slug="other", name="Other")
    empty = project_create(slug="empty", name="Empty")
    metric_create(project=shop, key="purchase", name="Purchase", kind="binomial", event_name="buy")
    experiment = running_experiment(shop)
    flag = flag_create(project=shop, key="dark", name="Dark")
    environment = Environment.objects.get(project=shop, key="production")

    call_command("migrate", "assignments", "0009", verbosity=0)
    with connection.cursor() as cursor:
        assert not partitions.partitioned(cursor)
    _old_history(shop, other, experiment, flag, environment)
    before = _rows()
    highest = max(row[0] for row in before["assignments_metricevent"])  # ids are per table

    call_command("migrate", "assignments", "0010", verbosity=0)
    assert _rows() == before
    with connection.cursor() as cursor:
        assert partitions.partitioned(cursor)
        cursor.execute("SELECT project_id, count(*) FROM assignments_eventid GROUP BY 1 ORDER BY 1")
        ids = dict(cursor.fetchall())
        cursor.execute(
            "SELECT tableoid::regclass::text FROM assignments_metricevent "
            "WHERE project_id = %s AND event_id = 'm4'",
            [shop.pk],
        )
        (ancient_home,) = cursor.fetchone()
        empty_weeks = partitions.weeks_of(cursor, "assignments_metricevent", empty.pk)
    # shop: 6 exposures + 4 flag exposures + 5 metric events + "shared" once; other: 5.
    assert ids == {shop.pk: 6 + 4 + 5, other.pk: 5}
    assert ancient_home == partitions.default_partition("assignments_metricevent", shop.pk)
    assert len(empty_weeks) == 3  # this week and the next two, for a project without events

    # The ledger blocks an id sent again, with another timestamp; a new id gets a fresh id.
    now = timezone.now()
    resent = {"event_id": "m1", "type": "metric", "name": "buy", "unit_id": "u1", "value": 9}
    result = events_ingest(project=shop, events=[{**resent, "timestamp": now.isoformat()}])
    assert (result.accepted, result.duplicates) == (0, 1)
    fresh = {**resent, "event_id": "new", "timestamp": now.isoformat()}
    assert events_ingest(project=shop, events=[fresh]).accepted == 1
    after = _rows()
    [new_row] = [row for row in after["assignments_metricevent"] if row[2] == "new"]
    assert new_row[0] > highest

    # Back to plain tables and forward again: still every row, with its id.
    call_command("migrate", "assignments", "0009", verbosity=0)
    assert _rows() == after
    call_command("migrate", verbosity=0)
    assert _rows() == after
