"""Event retention and the event tables' partitions (assignments/partitions.py,
assignments/services/retention.py): a project's partitions come and go with it, the maintenance
creates weeks ahead, drops expired weeks, deletes expired rows (the ledger's too) and moves a
default partition's rows into a new week; old events are refused; the retention setting."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from assignments import partitions
from assignments.models import Exposure, MetricEvent
from assignments.services import event_storage_maintain, events_ingest, retention
from experiments.models import AuditLog, Project
from experiments.services import project_create, project_update
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the partitioned layout is PostgreSQL's"
)


def metric(event_id, ts, unit_id="u1", value=1.0):
    return {
        "event_id": event_id,
        "type": "metric",
        "name": "purchase",
        "unit_id": unit_id,
        "value": value,
        "timestamp": ts.isoformat(),
    }


def _tables(prefix):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE %s", [prefix + "%"])
        return {name for (name,) in cursor.fetchall()}


def _partition_of(table, event_id):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {table} WHERE event_id = %s", [event_id]
        )
        return [name for (name,) in cursor.fetchall()]


def _ledger(project):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, ts FROM assignments_eventid WHERE project_id = %s ORDER BY 1",
            [project.pk],
        )
        return cursor.fetchall()


# --- partitions with the project --------------------------------------------------------------


@postgresql_only
def test_a_new_project_gets_its_partitions_and_a_deleted_one_loses_them(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks() as queued:
        project = project_create(slug="parts", name="Parts")
    assert any(getattr(c, "func", None) is retention._maintenance_queue for c in queued)
    # Created with the project: its own tables, no weeks yet (creating a project stays cheap).
    for table in partitions.EVENT_TABLES:
        assert partitions.weeks_of(connection.cursor(), table, project.pk) == {}
        assert partitions.default_partition(table, project.pk) in _tables(table)
    assert partitions.project_partition(partitions.LEDGER, project.pk) in _tables(partitions.LEDGER)
    events_ingest(project=project, events=[metric("a", timezone.now())])
    default = partitions.default_partition("assignments_metricevent", project.pk)
    assert _partition_of("assignments_metricevent", "a") == [default]

    # The maintenance queued at its creation makes this week and the next two, and moves the
    # first events out of the default.
    report = event_storage_maintain(project=project)
    this_week = partitions.week_start(timezone.now())
    for table in partitions.EVENT_TABLES:
        weeks = partitions.weeks_of(connection.cursor(), table, project.pk)
        assert sorted(weeks) == [this_week + partitions.WEEK * i for i in range(3)]
    assert report.moved == 1
    assert _partition_of("assignments_metricevent", "a") == [
        partitions.week_partition("assignments_metricevent", project.pk, this_week)
    ]

    pk = project.pk
    with django_capture_on_commit_callbacks(execute=True):
        project.delete()
    with connection.cursor() as cursor:
        for table in (*partitions.EVENT_TABLES, partitions.LEDGER):
            assert partitions.to_regclass(cursor, partitions.project_partition(table, pk)) is None


@postgresql_only
def test_other_projects_keep_their_partitions_and_events_when_one_is_deleted(
    django_capture_on_commit_callbacks,
):
    kept, gone = project_create(slug="kept", name="Kept"), project_create(slug="gone", name="Gone")
    now = timezone.now()
    events_ingest(project=kept, events=[metric("k", now)])
    events_ingest(project=gone, events=[metric("g", now)])
    with django_capture_on_commit_callbacks(execute=True):
        gone.delete()
    assert list(MetricEvent.objects.values_list("event_id", flat=True)) == ["k"]
    assert [row[0] for row in _ledger(kept)] == ["k"]


# --- the maintenance --------------------------------------------------------------------------


@postgresql_only
def test_maintenance_creates_this_week_and_the_next_two_and_is_idempotent():
    project = project_create(slug="ahead", name="Ahead")
    later = timezone.now() + timedelta(weeks=5)
    report = event_storage_maintain(project=project, now=later)
    monday = partitions.week_start(later)
    expected = {
        partitions.week_partition(table, project.pk, monday + partitions.WEEK * i)
        for table in partitions.EVENT_TABLES
        for i in range(3)
    }
    assert set(report.created) == expected
    assert report.dropped == [] and report.deleted == {}  # no retention: nothing expires
    assert event_storage_maintain(project=project, now=later).created == []


@postgresql_only
def test_maintenance_drops_expired_weeks_and_deletes_expired_rows_and_ids():
    project = project_create(slug="expire", name="Expire")
    now = timezone.now()
    event_storage_maintain(project=project, now=now)  # the weeks, as queued at its creation
    old = now - timedelta(weeks=30)  # no week covers it: the default partition
    events_ingest(project=project, events=[metric("old", old), metric("new", now)])
    assert _partition_of("assignments_metricevent", "old") == [
        partitions.default_partition("assignments_metricevent", project.pk)
    ]
    project_update(project=project, event_retention_days=14)
    later = now + timedelta(weeks=4)  # this week's partition now ended over 14 days ago
    report = event_storage_maintain(project=project, now=later, chunk_rows=1)

    this_week = partitions.week_start(now)
    dropped = {partitions.week_partition(t, project.pk, this_week) for t in partitions.EVENT_TABLES}
    assert dropped <= set(report.dropped)
    assert report.deleted["assignments_metricevent"] == 1  # "old", from the default
    assert report.deleted[partitions.LEDGER] == 2  # both ids, in chunks of one row
    assert not MetricEvent.objects.filter(project=project).exists()
    assert _ledger(project) == []


@postgresql_only
def test_a_dry_run_changes_nothing_and_says_what_it_would_do(capsys):
    project = project_create(slug="dry", name="Dry")
    now = timezone.now()
    events_ingest(project=project, events=[metric("old", now - timedelta(weeks=30))])
    project_update(project=project, event_retention_days=7)
    call_command("event_partitions", "--dry-run", "--project", "dry")
    out = capsys.readouterr().out
    assert "would delete 1 expired rows of assignments_metricevent" in out
    assert "would delete 1 expired rows of assignments_eventid" in out
    assert MetricEvent.objects.filter(event_id="old").exists() and len(_ledger(project)) == 1


@postgresql_only
def test_a_new_week_takes_the_rows_of_its_range_out_of_the_default_partition():
    """A week cannot be attached while the default partition holds rows of its range: they
    move into the new week in the same transaction, with their ids and values."""
    project = project_create(slug="move", name="Move")
    ts = timezone.now() - timedelta(weeks=6)
    events_ingest(project=project, events=[metric("late", ts, value=7.5), metric("x", ts)])
    before = {e.event_id: (e.pk, e.value, e.ts) for e in MetricEvent.objects.all()}
    monday = partitions.week_start(ts)
    with connection.cursor() as cursor:
        changes = partitions.weeks_create(cursor, project.pk, [monday])
    assert changes.moved == 2
    assert _partition_of("assignments_metricevent", "late") == [
        partitions.week_partition("assignments_metricevent", project.pk, monday)
    ]
    assert {e.event_id: (e.pk, e.value, e.ts) for e in MetricEvent.objects.all()} == before


def test_maintenance_deletes_expired_rows_on_either_database():
    """The retention works on SQLite too (chunked deletes of the plain tables)."""
    project = project_create(slug="plain", name="Plain")
    now = timezone.now()
    events_ingest(
        project=project,
        events=[metric("a", now - timedelta(days=40)), metric("b", now - timedelta(days=2))],
    )
    project_update(project=project, event_retention_days=30)
    report = event_storage_maintain(project=project, now=now, chunk_rows=1)
    assert report.deleted["assignments_metricevent"] == 1
    assert list(MetricEvent.objects.values_list("event_id", flat=True)) == ["b"]


# --- ingestion --------------------------------------------------------------------------------


def test_events_older_than_the_retention_are_rejected_naming_the_timestamp(project, service):
    project_update(project=project, event_retention_days=30)
    now = timezone.now()
    body = {"events": [metric("old", now - timedelta(days=31)), metric("ok", now)]}
    r = service.post("/api/v1/events", body, format="json")
    assert r.status_code == 202
    assert r.json()["accepted"] == 1
    [rejected] = r.json()["rejected"]
    assert (rejected["index"], rejected["field"]) == (0, "timestamp")
    assert "retention (30 days)" in rejected["message"]


def test_an_event_id_is_one_event_across_types_and_weeks(project, metrics):
    """The key spans the three tables and, on PostgreSQL, every weekly partition (the ledger)."""
    running_experiment(project)
    now = timezone.now()
    assert events_ingest(project=project, events=[metric("same", now)]).accepted == 1
    again = events_ingest(project=project, events=[metric("same", now - timedelta(weeks=3))])
    assert (again.accepted, again.duplicates) == (0, 1)
    exposure = {
        "event_id": "same",
        "type": "exposure",
        "experiment": "checkout-v2",
        "variant": "treatment",
        "unit_id": "u1",
        "timestamp": now.isoformat(),
    }
    as_exposure = events_ingest(project=project, events=[exposure])
    assert (as_exposure.accepted, as_exposure.duplicates) == (0, 1)
    assert (MetricEvent.objects.count(), Exposure.objects.count()) == (1, 0)
    if connection.vendor == "postgresql":
        assert [row[0] for row in _ledger(project)] == ["same"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_ids_store_each_id_once():
    """Two threads post batches that overlap (the same ids, other timestamps, in other
    orders): each id is stored exactly once, in one table, and the ledger holds it once."""
    project = project_create(slug="race", name="Race")
    now = timezone.now()
    ids = [f"id{i}" for i in range(300)]
    batches = [
        [metric(i, now - timedelta(days=n % 20, seconds=k)) for n, i in enumerate(ids)]
        for k in range(2)
    ]
    batches[1].reverse()
    results, errors = [], []
    start = threading.Barrier(2)

    def post(batch):
        try:
            start.wait()
            for lo in range(0, len(batch), 50):
                results.append(events_ingest(project=project, events=batch[lo : lo + 50]))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.accepted for r in results) == len(ids)
    assert sum(r.duplicates for r in results) == len(ids)
    stored = list(MetricEvent.objects.filter(project=project).values_list("event_id", flat=True))
    assert sorted(stored) == sorted(ids)
    assert [row[0] for row in _ledger(project)] == sorted(ids)


# --- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, 6, 3651, "thirty", True, 7.5])
def test_the_retention_setting_refuses_values_outside_its_range(api, project, days):
    url = f"/api/v1/projects/{project.slug}/settings/"
    r = api.patch(url, {"event_retention_days": days}, format="json")
    assert r.status_code == 400
    assert "event_retention_days" in r.json()
    assert Project.objects.get(pk=project.pk).event_retention_days is None


def test_the_retention_setting_is_saved_and_audited(api, project):
    url = f"/api/v1/projects/{project.slug}/settings/"
    r = api.patch(url, {"event_retention_days": 90}, format="json")
    assert r.status_code == 200 and r.json()["event_retention_days"] == 90
    assert Project.objects.get(pk=project.pk).event_retention_days == 90
    entry = AuditLog.objects.filter(action="project.update").latest("pk")
    assert (entry.before["event_retention_days"], entry.after["event_retention_days"]) == (None, 90)
    r = api.patch(url, {"event_retention_days": None}, format="json")
    assert r.status_code == 200 and Project.objects.get(pk=project.pk).event_retention_days is None


def test_the_settings_page_saves_the_retention(client, admin_user, project):
    client.force_login(admin_user)
    r = client.post(
        f"/p/{project.slug}/settings/project/",
        {"name": project.name, "webhook_url": "", "event_retention_days": "5"},
    )
    assert r.status_code == 200 and "must be between 7 and 3650 days" in r.content.decode()
    assert Project.objects.get(pk=project.pk).event_retention_days is None
    r = client.post(
        f"/p/{project.slug}/settings/project/",
        {"name": project.name, "webhook_url": "", "event_retention_days": "60"},
    )
    assert r.status_code == 302
    assert Project.objects.get(pk=project.pk).event_retention_days == 60


def test_weeks_start_on_monday_at_midnight_utc():
    thursday = datetime(2026, 12, 3, 15, tzinfo=UTC)
    assert partitions.week_start(thursday) == datetime(2026, 11, 30, tzinfo=UTC)
    assert partitions.week_partition("t", 4, datetime(2026, 11, 30, tzinfo=UTC)) == "t_p4_w20261130"
