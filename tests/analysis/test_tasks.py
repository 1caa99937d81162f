"""The Celery tasks, run eagerly: fan-out, the lock, retries, idempotency, backfill cut-offs."""

from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.db import OperationalError, connection

from analysis import aggregation, incremental_read, services, tasks
from analysis.locks import LOCK_NAMESPACE, experiment_lock
from analysis.models import AnalysisRun, ResultSnapshot, RunStatus
from experiments.models import ExperimentStatus
from experiments.services import experiment_create, experiment_pause
from tests.factories import experiment_payload, running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(project, metrics):
    return running_experiment(project)


@contextmanager
def held_elsewhere(experiment_id):
    """The experiment's lock held by another process (a second session on PostgreSQL: the
    same session would simply re-enter its advisory lock)."""
    if connection.vendor != "postgresql":
        with experiment_lock(experiment_id) as acquired:
            assert acquired
            yield
        return
    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        user=s["USER"],
        password=s["PASSWORD"] or None,
        dbname=s["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, experiment_id])
        yield


def test_beat_fans_out_one_expiring_task_per_running_experiment(
    project, metrics, monkeypatch, settings
):
    settings.ABACUS_ANALYSIS_INTERVAL = 120
    running = [running_experiment(project, "a"), running_experiment(project, "b")]
    experiment_pause(experiment=running_experiment(project, "c"))
    experiment_create(project=project, **experiment_payload("d"))  # a draft
    sent = []
    monkeypatch.setattr(
        tasks.run_analysis, "apply_async", lambda args, expires: sent.append((args, expires))
    )
    assert tasks.schedule_running.apply().get() == 2
    assert sorted(sent) == sorted(([e.pk], 120.0) for e in running)


def test_a_scheduled_run_records_itself_and_stores_a_snapshot(experiment):
    snapshot_id = tasks.run_analysis.apply(args=[experiment.pk]).get()
    run = AnalysisRun.objects.get()
    assert run.trigger == "schedule" and run.status == RunStatus.SUCCEEDED and run.task_id
    assert ResultSnapshot.objects.get().pk == snapshot_id


def test_a_scheduled_run_is_skipped_while_another_holds_the_experiment(experiment):
    with held_elsewhere(experiment.pk):
        assert tasks.run_analysis.apply(args=[experiment.pk]).get() is None
    assert not AnalysisRun.objects.exists() and not ResultSnapshot.objects.exists()


def test_an_on_demand_run_waits_for_the_lock_then_gives_up_visibly(experiment):
    run = services.analysis_run_create(experiment=experiment, trigger="api")
    with held_elsewhere(experiment.pk):
        tasks.run_analysis.apply(args=[experiment.pk, run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.SKIPPED and "still running" in run.error


def test_an_on_demand_run_runs_once_the_lock_is_free(
    experiment, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(tasks.run_analysis, "delay", lambda *a: tasks.run_analysis.apply(args=a))
    with django_capture_on_commit_callbacks(execute=True):
        run_id = services.analysis_enqueue(experiment, "api")
    run = AnalysisRun.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED and run.trigger == "api"
    assert ResultSnapshot.objects.get().run_id == run_id


def test_a_transient_database_error_is_retried_with_the_same_run(experiment, monkeypatch):
    real = services.analysis_run
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["run_id"])
        if len(calls) == 1:
            AnalysisRun.objects.filter(pk=kwargs["run_id"]).update(attempts=1)
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(tasks, "analysis_run", flaky)
    snapshot_id = tasks.run_analysis.apply(args=[experiment.pk]).get()
    assert len(calls) == 2 and calls[0] == calls[1]
    run = AnalysisRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2
    assert ResultSnapshot.objects.get().pk == snapshot_id


def test_a_failing_run_is_recorded_and_the_task_fails(experiment, monkeypatch):
    def broken(**kwargs):
        raise ZeroDivisionError("bad data")

    monkeypatch.setattr(aggregation, "experiment_aggregates", broken)
    monkeypatch.setattr(incremental_read, "experiment_aggregates", broken)  # the stored path's read
    result = tasks.run_analysis.apply(args=[experiment.pk])
    assert result.failed()
    run = AnalysisRun.objects.get()
    assert run.status == RunStatus.FAILED and run.error == "ZeroDivisionError: bad data"


def test_a_backfill_task_uses_its_cutoff_and_never_acts(experiment):
    through = experiment.phase_started_at + timedelta(minutes=1)
    snapshot_id = tasks.run_analysis.apply(args=[experiment.pk, None, through.isoformat()]).get()
    snapshot = ResultSnapshot.objects.get(pk=snapshot_id)
    assert snapshot.data_through == through and snapshot.run.trigger == "backfill"
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING


def test_a_deleted_experiment_is_ignored(experiment):
    pk = experiment.pk
    experiment.delete()
    assert tasks.run_analysis.apply(args=[pk]).get() is None


def test_the_beat_marks_runs_older_than_the_time_limit_failed_and_retries(experiment, monkeypatch):
    """A run whose worker died stays `running`; the next fan-out marks it failed with a reason
    (older than analysis.run's hard time limit), leaves a young run alone, and queues a retry."""
    from django.utils import timezone

    from analysis.selectors import health_findings

    now = timezone.now()
    dead = services.analysis_run_create(experiment=experiment, trigger="schedule")
    AnalysisRun.objects.filter(pk=dead.pk).update(
        status=RunStatus.RUNNING, started_at=now - timedelta(seconds=tasks.RUN_TIME_LIMIT + 60)
    )
    lost = services.analysis_run_create(experiment=experiment, trigger="api")
    AnalysisRun.objects.filter(pk=lost.pk).update(
        created_at=now - timedelta(seconds=tasks.RUN_TIME_LIMIT + 60)
    )
    young = services.analysis_run_create(experiment=experiment, trigger="schedule")
    AnalysisRun.objects.filter(pk=young.pk).update(
        status=RunStatus.RUNNING, started_at=now - timedelta(seconds=60)
    )
    sent = []
    monkeypatch.setattr(tasks.run_analysis, "apply_async", lambda args, expires: sent.append(args))
    assert tasks.schedule_running.apply().get() == 1
    dead.refresh_from_db()
    lost.refresh_from_db()
    young.refresh_from_db()
    assert dead.status == RunStatus.FAILED and dead.error.startswith("Stale: still running")
    assert dead.finished_at is not None
    assert lost.status == RunStatus.FAILED and "never started" in lost.error
    assert young.status == RunStatus.RUNNING
    assert sent == [[experiment.pk]]  # the retry
    findings = health_findings(experiment, None, dead)
    assert any(f.title == "The last analysis failed" and "Stale" in f.message for f in findings)


def test_analyze_with_the_broker_down_marks_its_run_failed_at_once(
    experiment, monkeypatch, django_capture_on_commit_callbacks
):
    """The broker refuses the task: the run is failed with the reason (not queued forever)
    and the error still reaches the caller (the API's 503)."""
    from kombu.exceptions import OperationalError as BrokerError

    def refuse(*args, **kwargs):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.run_analysis, "delay", refuse)
    with pytest.raises(BrokerError), django_capture_on_commit_callbacks(execute=True):
        run_id = services.analysis_enqueue(experiment, "api")
    run = AnalysisRun.objects.get(experiment=experiment)
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert run.error.startswith("Could not be queued: the task broker is unavailable")
    assert "run_id" not in locals() or run.pk == run_id
