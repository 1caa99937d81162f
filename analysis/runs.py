"""Analysis runs: queueing one, its lifecycle (queued -> running -> succeeded | failed),
backfills, and marking stale runs failed.

``analysis_run`` computes one cut-off: analysis.compute reads the database and evaluates,
analysis.persist stores the snapshot and its rows, and on a live run analysis.act acts on it.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from analysis.act import act, alert
from analysis.compute import evaluate_cutoff
from analysis.dispatch import enqueue_run
from analysis.models import AnalysisRun, ResultSnapshot, RunStatus
from analysis.persist import snapshot_rows, snapshot_save
from analysis.time_views import time_views_refresh
from experiments.models import Experiment

# --- queueing ---------------------------------------------------------------------------------


def analysis_run_create(
    *, experiment: Experiment, trigger: str, through: datetime | None = None
) -> AnalysisRun:
    return AnalysisRun.objects.create(experiment=experiment, trigger=trigger, data_through=through)


def analysis_enqueue(experiment: Experiment, trigger: str, through: datetime | None = None) -> int:
    """Record a queued run and send its task once the transaction commits."""
    run = analysis_run_create(
        experiment=experiment, trigger="backfill" if through else trigger, through=through
    )

    def send() -> None:
        try:
            enqueue_run(experiment.pk, run.pk)
        except Exception as exc:
            # The broker is down: the run can never start, so say so on it (the health panel
            # shows it) instead of leaving it queued; the caller still answers 503.
            AnalysisRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.FAILED,
                finished_at=timezone.now(),
                error=f"Could not be queued: the task broker is unavailable "
                f"({type(exc).__name__}). The next scheduled analysis retries.",
            )
            raise

    transaction.on_commit(send)
    return run.pk


def analysis_runs_expire(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Mark failed the runs no worker will finish: ``running`` since before ``older_than`` (the
    task's hard time limit: its worker died or was killed) or still ``queued`` that long (its
    message was lost). A redelivered task may still finish such a run later. Returns how many."""
    cutoff = (now or timezone.now()) - older_than
    limit = f"{older_than.total_seconds():.0f} s"
    expired = AnalysisRun.objects.filter(status=RunStatus.RUNNING, started_at__lt=cutoff).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error=f"Stale: still running after the task's time limit ({limit}); its worker "
        "probably died. The next scheduled analysis retries.",
    )
    expired += AnalysisRun.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error=f"Stale: queued for longer than the task's time limit ({limit}) and never "
        "started; its message was lost. The next scheduled analysis retries.",
    )
    return expired


# --- one run ----------------------------------------------------------------------------------


def analysis_run(
    *,
    experiment_id: int,
    run_id: int | None = None,
    through: datetime | None = None,
    trigger: str = "direct",
) -> ResultSnapshot | None:
    """Compute and store the snapshot of the experiment at the cut-off ``through`` (default:
    now, or when the experiment ended). Idempotent: a run that already produced its snapshot,
    or a cut-off that already has one, returns the stored snapshot. A cut-off that is not a
    look (between two group-sequential looks, or after the final analysis) stores nothing:
    the run's ``note`` says why, and the latest stored snapshot (or None) is returned.

    A live run (no explicit ``through``) then acts: auto-rollback on harm or ill health when
    the experiment opts in, and the ramp plan. A backfill (explicit ``through``) never acts.
    A failure marks the run failed with its error and re-raises; earlier snapshots stay.
    """
    experiment = Experiment.objects.select_related("project").get(pk=experiment_id)
    run = AnalysisRun.objects.filter(pk=run_id, experiment=experiment).first() if run_id else None
    if run is None:
        run = analysis_run_create(
            experiment=experiment, trigger="backfill" if through else trigger, through=through
        )
    done = ResultSnapshot.objects.filter(run=run).first()
    if done is not None:
        _finish(run, RunStatus.SUCCEEDED)
        return done
    now = timezone.now()
    if run.data_through is None:
        run.data_through = through or _default_cutoff(experiment, now)
    run.status = RunStatus.RUNNING
    run.started_at = now
    run.attempts += 1
    run.error = ""
    run.note = ""
    run.save(update_fields=["data_through", "status", "started_at", "attempts", "error", "note"])
    try:
        existing = ResultSnapshot.objects.filter(
            experiment=experiment, phase=experiment.phase, data_through=run.data_through
        ).first()
        snapshot = existing or _compute(experiment, run, live=run.trigger != "backfill")
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:4000]
        _finish(run, RunStatus.FAILED)
        raise
    _finish(run, RunStatus.SUCCEEDED)
    return snapshot


def analysis_backfill(
    *, experiment_id: int, every: timedelta = timedelta(days=1), until: datetime | None = None
) -> list[ResultSnapshot]:
    """Snapshots at phase start + every, + 2 every, ... up to ``until`` (default now), e.g. a
    daily history for a demo. Each is an ordinary, idempotent run with that cut-off."""
    experiment = Experiment.objects.get(pk=experiment_id)
    start = experiment.phase_started_at or experiment.started_at
    if start is None:
        return []
    until = until or _default_cutoff(experiment, timezone.now())
    snapshots: list[ResultSnapshot] = []
    cutoff = start + every
    while cutoff <= until:
        snapshot = analysis_run(experiment_id=experiment_id, through=cutoff)
        if snapshot is not None and snapshot.data_through == cutoff:
            snapshots.append(snapshot)
        cutoff += every
    return snapshots


def _compute(experiment: Experiment, run: AnalysisRun, live: bool) -> ResultSnapshot | None:
    """Evaluate the run's cut-off and store a snapshot when it is a look (or the experiment
    is still collecting data); otherwise record why on the run and store nothing. A live run
    then acts at counted looks and alerts, in the snapshot's transaction; after it commits, the
    daily and novelty views are refreshed when due (analysis/time_views.py)."""
    cut = evaluate_cutoff(experiment, run.data_through, live=live)
    status = cut.evaluation.status
    if not status.stored:
        run.note = status.message
        run.save(update_fields=["note"])
        return (
            ResultSnapshot.objects.filter(experiment=experiment, phase=experiment.phase)
            .order_by("-data_through", "-id")
            .first()
        )
    rows = snapshot_rows(cut)
    with transaction.atomic():
        snapshot = snapshot_save(experiment, run, cut, rows)
        if live and status.acts:
            actions = act(experiment, snapshot, cut.evaluation)
            if actions:
                snapshot.actions = actions
                snapshot.save(update_fields=["actions"])
        if live:
            alert(experiment, snapshot)
    time_views_refresh(experiment=experiment, snapshot=snapshot, cut=cut)  # never raises
    return snapshot


def _default_cutoff(experiment: Experiment, now: datetime) -> datetime:
    if experiment.ended_at is not None and experiment.ended_at < now:
        return experiment.ended_at
    return now


def _finish(run: AnalysisRun, status: str) -> None:
    run.status = status
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])
