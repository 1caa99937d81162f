"""Thin Celery tasks: the beat fan-out, one analysis run per experiment, webhook delivery, the
holdouts' comparisons.

Tasks take ids, have soft and hard time limits, and call one service. ``analysis.run`` holds the
experiment's lock while it computes, retries on transient database errors with the same run
(so the same cut-off), and is idempotent: a redelivered run returns the snapshot it made.
"""

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from analysis.holdouts import holdout_analyze
from analysis.locks import experiment_lock
from analysis.models import AnalysisRun, DeliveryStatus, RunStatus
from analysis.services import analysis_run, analysis_run_create, analysis_runs_expire
from analysis.webhooks import (
    WebhookError,
    webhook_deliver,
    webhook_deliveries_resend,
    webhook_give_up,
)
from experiments.models import Experiment, ExperimentStatus, Holdout

logger = logging.getLogger(__name__)
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
LOCK_RETRY_SECONDS = 15  # a queued on-demand run waits this long for a run in progress
MAX_RETRIES = 5
RUN_TIME_LIMIT = 1800  # seconds: analysis.run's hard limit; a run older than this is stale


@shared_task(name="analysis.schedule_running", soft_time_limit=60, time_limit=90)
def schedule_running() -> int:
    """Fan out one analysis task per running experiment; each expires after one interval so a
    stalled worker does not build up a backlog of stale runs. First, runs no worker will finish
    (running or queued for longer than analysis.run's hard time limit) are marked failed, so
    the health panel says so; this fan-out is their retry."""
    expired = analysis_runs_expire(older_than=timedelta(seconds=RUN_TIME_LIMIT))
    if expired:
        logger.warning("marked %s stale analysis run(s) failed", expired)
    interval = float(settings.ABACUS_ANALYSIS_INTERVAL)
    ids = list(
        Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list("pk", flat=True)
    )
    for experiment_id in ids:
        run_analysis.apply_async(args=[experiment_id], expires=interval)
    return len(ids)


@shared_task(
    name="analysis.run",
    bind=True,
    soft_time_limit=RUN_TIME_LIMIT - 300,
    time_limit=RUN_TIME_LIMIT,
    max_retries=MAX_RETRIES,
    acks_late=True,
)
def run_analysis(  # noqa: ANN201
    self,  # noqa: ANN001
    experiment_id: int,
    run_id: int | None = None,
    through: str | None = None,
):
    """Compute one snapshot; ``through`` (ISO 8601) makes it a backfill at that cut-off."""
    cutoff = _parse(through)
    with experiment_lock(experiment_id) as acquired:
        if not acquired:
            return _busy(self, experiment_id, run_id, through)
        experiment = Experiment.objects.filter(pk=experiment_id).first()
        if experiment is None:
            return None
        if run_id is None:
            trigger = "backfill" if cutoff else "schedule"
            run_id = analysis_run_create(experiment=experiment, trigger=trigger, through=cutoff).pk
            AnalysisRun.objects.filter(pk=run_id).update(task_id=self.request.id or "")
        try:
            snapshot = analysis_run(experiment_id=experiment_id, run_id=run_id, through=cutoff)
        except TRANSIENT_DB_ERRORS as exc:
            if not connection.in_atomic_block:
                connection.close()  # the next attempt reconnects
            if self.request.retries >= self.max_retries:
                raise
            logger.warning("analysis of experiment %s: %s; retrying", experiment_id, exc)
            raise self.retry(
                args=[experiment_id, run_id, through], exc=exc, countdown=_backoff(self)
            ) from exc
    return snapshot.pk if snapshot is not None else None


def _busy(task, experiment_id: int, run_id: int | None, through: str | None):  # noqa: ANN001, ANN202
    """Another worker holds the experiment. A scheduled run is dropped (the next interval
    brings a fresh one); an on-demand run waits for it."""
    if run_id is None:
        logger.info("analysis of experiment %s in progress elsewhere; skipped", experiment_id)
        return None
    if task.request.retries < task.max_retries:
        raise task.retry(args=[experiment_id, run_id, through], countdown=LOCK_RETRY_SECONDS)
    AnalysisRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.SKIPPED,
        error="Another analysis of this experiment was still running; this one was dropped.",
    )
    return None


def _backoff(task) -> int:  # noqa: ANN001
    return min(300, 5 * 2**task.request.retries)


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(f"'through' must be an ISO 8601 datetime, got {value!r}")
    return parsed


@shared_task(
    name="analysis.deliver_webhook",
    bind=True,
    soft_time_limit=30,
    time_limit=60,
    max_retries=8,
    acks_late=True,
)
def deliver_webhook(self, delivery_id: int) -> bool:  # noqa: ANN001
    """One attempt per execution; retried with exponential backoff, then marked failed."""
    try:
        delivery = webhook_deliver(delivery_id=delivery_id)
    except WebhookError as exc:
        if self.request.retries >= self.max_retries:
            webhook_give_up(delivery_id=delivery_id)
            logger.error("webhook %s failed for good: %s", delivery_id, exc)
            return False
        base = float(getattr(settings, "ABACUS_WEBHOOK_RETRY_SECONDS", 10))
        raise self.retry(exc=exc, countdown=min(900.0, base * 2**self.request.retries)) from exc
    return delivery.status == DeliveryStatus.DELIVERED  # False: refused (core.egress)


@shared_task(name="analysis.resend_webhooks", soft_time_limit=60, time_limit=90)
def resend_webhooks() -> list[int]:
    """`webhook_deliveries_resend`: [queued again, given up]."""
    queued, given_up = webhook_deliveries_resend()
    if queued or given_up:
        logger.warning("webhooks never queued: %d queued again, %d given up", queued, given_up)
    return [queued, given_up]


@shared_task(name="analysis.schedule_holdouts", soft_time_limit=60, time_limit=90)
def schedule_holdouts() -> int:
    """Queue the comparison of every running holdout, and of every ended one whose latest
    snapshot is from before its end (its final comparison); each expires after one interval."""
    interval = float(settings.ABACUS_HOLDOUT_INTERVAL)
    ids = list(Holdout.objects.filter(enabled=True).values_list("pk", flat=True))
    ids += [
        h.pk
        for h in Holdout.objects.filter(enabled=False, ended_at__isnull=False)
        if not h.snapshots.filter(data_through__gte=h.ended_at).exists()
    ]
    for holdout_id in ids:
        run_holdout.apply_async(args=[holdout_id], expires=interval)
    return len(ids)


@shared_task(
    name="analysis.holdout_run",
    bind=True,
    soft_time_limit=RUN_TIME_LIMIT - 300,
    time_limit=RUN_TIME_LIMIT,
    max_retries=MAX_RETRIES,
    acks_late=True,
)
def run_holdout(self, holdout_id: int, through: str | None = None) -> int | None:  # noqa: ANN001
    """Compute and store the holdout's comparison now (or at ``through``, ISO 8601); retried on
    transient database errors at the same cut-off. Two runs at once store two cut-offs."""
    cutoff = _parse(through) or timezone.now()
    if not Holdout.objects.filter(pk=holdout_id, started_at__isnull=False).exists():
        return None
    try:
        return holdout_analyze(holdout_id=holdout_id, through=cutoff).pk
    except TRANSIENT_DB_ERRORS as exc:
        if not connection.in_atomic_block:
            connection.close()
        if self.request.retries >= self.max_retries:
            raise
        retry = [holdout_id, cutoff.isoformat()]
        raise self.retry(args=retry, exc=exc, countdown=_backoff(self)) from exc
