"""Thin Celery tasks: the beat fan-out and one analysis run per experiment."""

import logging

from celery import shared_task
from django.db import OperationalError

from analysis.locks import experiment_lock
from analysis.services import analysis_run
from experiments.models import Experiment, ExperimentStatus

logger = logging.getLogger(__name__)


@shared_task(name="analysis.schedule_running", soft_time_limit=60, time_limit=90)
def schedule_running() -> int:
    """Fan out one analysis task per running experiment."""
    ids = list(
        Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list("pk", flat=True)
    )
    for experiment_id in ids:
        run_analysis.apply_async(args=[experiment_id], expires=300)
    return len(ids)


@shared_task(
    name="analysis.run",
    bind=True,
    soft_time_limit=1500,
    time_limit=1800,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    acks_late=True,
)
def run_analysis(self, experiment_id: int, run_id: int | None = None) -> int | None:  # noqa: ANN001
    with experiment_lock(experiment_id) as acquired:
        if not acquired:
            logger.info(
                "analysis of experiment %s already running elsewhere; skipped", experiment_id
            )
            return None
        snapshot = analysis_run(experiment_id=experiment_id, run_id=run_id)
        return snapshot.pk if snapshot else None
