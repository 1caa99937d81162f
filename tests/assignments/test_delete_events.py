"""Removing bad events: the service (filters, dry run, audit), the admin-only API endpoint and
the delete_events management command; metric events, experiment exposures and flag exposures."""

from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from assignments.models import Exposure, FlagExposure, MetricEvent
from assignments.services import events_delete
from core.errors import DomainError
from experiments.models import AuditLog, Environment, Role
from experiments.services import project_create
from flags.services import flag_create
from tests.factories import running_experiment

pytestmark = pytest.mark.django_db
URL = "/api/v1/projects/shop/events/delete"


def at(hour: int) -> datetime:
    return datetime(2026, 11, 29, hour, tzinfo=UTC)


def counts(metric=0, exposure=0, flag_exposure=0):
    return {"metric": metric, "exposure": exposure, "flag_exposure": flag_exposure}


def flag_exposure(project, event_id, unit_id, hour):
    FlagExposure.objects.create(
        project=project,
        event_id=event_id,
        environment=Environment.objects.get(project=project, key="production"),
        flag=project.flags.get(key="nav"),
        variation="on",
        unit_id=unit_id,
        ts=at(hour),
    )


@pytest.fixture
def stored(project, metrics):
    """u1 and u2 with an exposure and a flag exposure each (f0 at 1h, f1 at 6h); metric events
    of several names and times; and the same unit and event ids in another project, which must
    never be touched."""
    experiment = running_experiment(project)
    control = experiment.variants.get(key="control")
    for i, unit in enumerate(["u1", "u2"]):
        Exposure.objects.create(
            project=project,
            event_id=f"x{i}",
            experiment=experiment,
            variant=control,
            unit_id=unit,
            ts=at(1),
        )
    rows = [
        ("e1", "u1", "purchase", 1e308, 2),
        ("e2", "u1", "purchase", 5.0, 3),
        ("e3", "u2", "purchase", 7.0, 4),
        ("e4", "u2", "click", 1.0, 5),
    ]
    for event_id, unit, name, value, hour in rows:
        MetricEvent.objects.create(
            project=project, event_id=event_id, unit_id=unit, name=name, value=value, ts=at(hour)
        )
    other = project_create(slug="other", name="Other")
    MetricEvent.objects.create(
        project=other, event_id="e1", unit_id="u1", name="purchase", value=1.0, ts=at(2)
    )
    for proj in (project, other):
        flag_create(project=proj, key="nav", name="New navigation")
    flag_exposure(project, "f0", "u1", 1)
    flag_exposure(project, "f1", "u2", 6)
    flag_exposure(other, "f0", "u1", 1)
    return project


def _left(project):
    return sorted(MetricEvent.objects.filter(project=project).values_list("event_id", flat=True))


def _flags_left(project):
    return sorted(FlagExposure.objects.filter(project=project).values_list("event_id", flat=True))


def test_delete_by_event_id_removes_only_that_event_of_this_project(stored, admin_user):
    result = events_delete(project=stored, actor=admin_user, event_ids=["e1"], kind="metric")
    assert result.matched == counts(metric=1)
    assert result.deleted == counts(metric=1)
    assert _left(stored) == ["e2", "e3", "e4"]
    assert MetricEvent.objects.filter(event_id="e1").count() == 1  # the other project's


def test_filters_combine_with_and_and_the_time_range_is_half_open(stored):
    result = events_delete(
        project=stored, unit_ids=["u1", "u2"], names=["purchase"], since=at(3), until=at(4)
    )
    assert result.deleted == counts(metric=1)  # e2 at 3h; e3 at 4h is excluded
    assert _left(stored) == ["e1", "e3", "e4"]


def test_type_all_by_unit_removes_every_type(stored):
    result = events_delete(project=stored, unit_ids=["u2"])
    assert result.deleted == counts(metric=2, exposure=1, flag_exposure=1)
    assert list(Exposure.objects.values_list("unit_id", flat=True)) == ["u1"]
    assert _flags_left(stored) == ["f0"]


def test_a_dry_run_counts_and_changes_nothing(stored):
    result = events_delete(project=stored, unit_ids=["u1"], dry_run=True)
    assert result.matched == counts(metric=2, exposure=1, flag_exposure=1)
    assert result.deleted == counts() and result.dry_run
    assert _left(stored) == ["e1", "e2", "e3", "e4"] and Exposure.objects.count() == 2
    assert _flags_left(stored) == ["f0", "f1"]
    assert not AuditLog.objects.filter(action="events.delete").exists()


def test_a_deletion_is_audited_with_who_the_filters_and_the_counts(stored, admin_user):
    events_delete(project=stored, actor=admin_user, names=["click"], kind="metric")
    log = AuditLog.objects.get(action="events.delete")
    assert log.actor == admin_user and log.actor_label == "alice" and log.project == stored
    assert log.after["filters"]["names"] == ["click"] and log.after["filters"]["type"] == "metric"
    assert log.after["matched"] == counts(metric=1)
    assert log.after["deleted"] == counts(metric=1)


def test_a_deletion_of_both_types_is_audited_as_all(stored, admin_user):
    events_delete(project=stored, actor=admin_user, unit_ids=["u1"], kind="all")
    assert AuditLog.objects.get(action="events.delete").after["filters"]["type"] == "all"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "filters"),
        ({"kind": "metric"}, "filters"),
        ({"unit_ids": ["u1"], "kind": "everything"}, "type"),
        ({"event_ids": "e1"}, "event_ids"),
        ({"unit_ids": [""]}, "unit_ids"),
        ({"names": ["purchase"], "kind": "exposure"}, "names"),
        ({"names": ["purchase"], "kind": "flag_exposure"}, "names"),
        ({"since": at(5), "until": at(5)}, "until"),
    ],
)
def test_bad_filters_are_refused_naming_the_field_and_nothing_is_deleted(stored, arguments, field):
    with pytest.raises(DomainError) as exc:
        events_delete(project=stored, **arguments)
    assert exc.value.field == field
    assert len(_left(stored)) == 4 and Exposure.objects.count() == 2
    assert FlagExposure.objects.count() == 3


# --- flag exposures ----------------------------------------------------------------------------


def test_flag_exposures_by_event_id_only_in_this_project(stored, admin_user):
    result = events_delete(project=stored, event_ids=["f0"], kind="flag_exposure")
    assert result.matched == result.deleted == counts(flag_exposure=1)
    assert _flags_left(stored) == ["f1"]
    assert FlagExposure.objects.filter(event_id="f0").count() == 1  # the other project's


def test_flag_exposures_by_unit_and_time_range(stored):
    assert events_delete(project=stored, unit_ids=["u1"], kind="flag_exposure").deleted == (
        counts(flag_exposure=1)
    )
    assert _flags_left(stored) == ["f1"]
    result = events_delete(project=stored, since=at(6), until=at(7), kind="flag_exposure")
    assert result.deleted == counts(flag_exposure=1) and _flags_left(stored) == []
    assert len(_left(stored)) == 4 and Exposure.objects.count() == 2  # other types stay


def test_type_exposure_means_experiment_exposures_and_leaves_flag_exposures(stored):
    assert events_delete(project=stored, unit_ids=["u1"], kind="exposure").deleted == counts(
        exposure=1
    )
    assert _flags_left(stored) == ["f0", "f1"]


def test_type_all_by_time_range_covers_flag_exposures(stored):
    result = events_delete(project=stored, since=at(5))
    assert result.deleted == counts(metric=1, flag_exposure=1)  # e4 at 5h, f1 at 6h
    assert _flags_left(stored) == ["f0"]


def test_a_names_filter_matches_no_flag_exposure(stored):
    result = events_delete(project=stored, unit_ids=["u1"], names=["purchase"])
    assert result.deleted == counts(metric=2) and _flags_left(stored) == ["f0", "f1"]


def test_a_flag_exposure_deletion_is_audited_and_keeps_the_evaluation_counts(stored, admin_user):
    from flags.models import FlagUsage

    environment = Environment.objects.get(project=stored, key="production")
    flag = stored.flags.get(key="nav")
    FlagUsage.objects.create(
        flag=flag, environment=environment, variation="on", day=at(1).date(), count=2, last_at=at(6)
    )
    events_delete(project=stored, actor=admin_user, unit_ids=["u2"], kind="flag_exposure")
    log = AuditLog.objects.get(action="events.delete")
    assert log.after["filters"]["type"] == "flag_exposure"
    assert log.after["filters"]["unit_ids"] == ["u2"]
    assert log.after["matched"] == log.after["deleted"] == counts(flag_exposure=1)
    assert FlagUsage.objects.get().count == 2  # evaluations happened; only the events go


# --- the API ----------------------------------------------------------------------------------


def test_an_admin_deletes_through_the_api(stored, api):
    r = api.post(URL, {"event_ids": ["e1"], "type": "metric"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json() == {"matched": counts(metric=1), "deleted": counts(metric=1), "dry_run": False}
    assert _left(stored) == ["e2", "e3", "e4"]
    assert AuditLog.objects.get(action="events.delete").actor_label == "alice"


def test_the_api_dry_run_answers_the_matches(stored, api):
    r = api.post(URL, {"unit_ids": ["u1"], "dry_run": True}, format="json")
    assert r.status_code == 200
    assert r.json()["matched"] == counts(metric=2, exposure=1, flag_exposure=1)
    assert r.json()["deleted"] == counts() and len(_left(stored)) == 4


def test_the_api_deletes_flag_exposures(stored, api):
    r = api.post(URL, {"unit_ids": ["u2"], "type": "flag_exposure"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["deleted"] == counts(flag_exposure=1) and _flags_left(stored) == ["f0"]
    r = api.post(URL, {"names": ["click"], "type": "flag_exposure"}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "names"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "filters"),
        ({"type": "all"}, "filters"),
        ({"unit_ids": ["u1"], "type": "everything"}, "type"),
        ({"unit_ids": "u1"}, "unit_ids"),
        ({"event_ids": [1, None]}, "event_ids"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-29T05:00:00Z", "since": "2026-11-29T06:00:00Z"}, "until"),
        ({"unit_id": ["u1"], "names": ["purchase"]}, "unit_id"),
        ({"unit_ids": ["u1"], "dry_run": "perhaps"}, "dry_run"),
        ({"event_ids": ["e"] * 1001}, "event_ids"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(stored, api, body, field):
    r = api.post(URL, body, format="json")
    assert r.status_code == 400, r.content
    data = r.json()
    assert field in data or data.get("field") == field, data
    assert len(_left(stored)) == 4


@pytest.mark.parametrize(("role", "status"), [(Role.EDITOR, 403), (Role.VIEWER, 403), (None, 404)])
def test_only_admins_may_delete_events(stored, make_member, django_user_model, role, status):
    if role is None:
        user = django_user_model.objects.create_user("stranger", "s@example.com", "pw-12345")
    else:
        user = make_member(f"m-{role}", role)
    client = APIClient()
    client.force_authenticate(user)
    r = client.post(URL, {"event_ids": ["e1"]}, format="json")
    assert r.status_code == status
    assert len(_left(stored)) == 4


def test_an_api_key_cannot_delete_events(stored, service):
    r = service.post(URL, {"event_ids": ["e1"]}, format="json")
    assert r.status_code in (401, 403) and len(_left(stored)) == 4


def test_the_endpoint_is_in_the_openapi_schema(api):
    r = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    paths = r.json()["paths"]
    [path] = [p for p in paths if p.startswith("/api/v1/projects/{project}/events/delete")]
    operation = paths[path]["post"]
    assert operation["operationId"] == "projects_events_delete"
    assert "200" in operation["responses"]


# --- the management command -----------------------------------------------------------------


def test_the_command_deletes_prints_the_counts_and_is_audited_as_cli(stored, capsys):
    call_command(
        "delete_events",
        "--project=shop",
        "--unit=u1",
        "--name=purchase",
        "--since=2026-11-29T00:00:00Z",
    )
    out = capsys.readouterr().out
    assert (
        "matched: 2 metric events, 0 exposures, 0 flag exposures; "
        "deleted: 2 metric events, 0 exposures, 0 flag exposures"
    ) in out
    assert _left(stored) == ["e3", "e4"]
    log = AuditLog.objects.get(action="events.delete")
    assert log.actor is None and log.actor_label == "cli"


def test_the_command_deletes_flag_exposures(stored, capsys):
    call_command("delete_events", "--project=shop", "--type=flag_exposure", "--event-id=f1")
    assert "deleted: 0 metric events, 0 exposures, 1 flag exposures" in capsys.readouterr().out
    assert _flags_left(stored) == ["f0"] and len(_left(stored)) == 4


def test_the_command_dry_run_changes_nothing(stored, capsys):
    call_command("delete_events", "--project=shop", "--event-id=e1", "--dry-run")
    assert "would delete: 1 metric events" in capsys.readouterr().out
    assert len(_left(stored)) == 4


def test_the_command_refuses_no_filter_and_an_unknown_project(stored):
    with pytest.raises(CommandError, match="at least one filter"):
        call_command("delete_events", "--project=shop")
    with pytest.raises(CommandError, match="No project"):
        call_command("delete_events", "--project=nope", "--unit=u1")
    assert len(_left(stored)) == 4
