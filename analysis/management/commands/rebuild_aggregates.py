"""Rebuild the stored per-unit aggregates of the incremental analysis (analysis/incremental.py)
from the events: a repair after events were deleted or restored (docs/operations.md)."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from analysis import incremental
from analysis.locks import experiment_lock
from analysis.models import AggregateState
from experiments.models import Experiment, ExperimentStatus


class Command(BaseCommand):
    help = (
        "Recompute the stored per-unit aggregates from the events, for one experiment or for "
        "every running experiment and every one that has them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--experiment", type=int, metavar="ID", help="only this experiment")

    def handle(self, *args: Any, **options: Any) -> None:
        experiments = self._experiments(options["experiment"])
        busy, failed = [], []
        for experiment in experiments:
            label = f"experiment {experiment.pk} ({experiment.key})"
            with experiment_lock(experiment.pk) as acquired:
                if not acquired:
                    self.stderr.write(f"{label}: an analysis holds it; skipped, run again")
                    busy.append(experiment.pk)
                    continue
                started = time.monotonic()

                def progress(done: int, total: int, label: str = label) -> None:
                    self.stdout.write(f"{label}: {done:,}/{total:,} units")

                try:
                    units = incremental.rebuild(experiment, progress=progress)
                except (DatabaseError, incremental.Superseded) as exc:
                    self.stderr.write(f"{label}: failed: {exc}")
                    failed.append(experiment.pk)
                    continue
            if units is None:
                self.stdout.write(f"{label}: no metric is stored incrementally; nothing to do")
            else:
                seconds = time.monotonic() - started
                self.stdout.write(f"{label}: rebuilt, {units:,} units in {seconds:.1f} s")
        if busy or failed:
            raise CommandError(f"not rebuilt: {', '.join(map(str, busy + failed))} (see above)")

    @staticmethod
    def _experiments(experiment_id: int | None) -> list[Experiment]:
        if experiment_id is not None:
            experiment = Experiment.objects.filter(pk=experiment_id).first()
            if experiment is None:
                raise CommandError(f"--experiment: no experiment with id {experiment_id}")
            return [experiment]
        stored = AggregateState.objects.values_list("experiment_id", flat=True)
        return list(
            Experiment.objects.filter(status=ExperimentStatus.RUNNING)
            .union(Experiment.objects.filter(pk__in=stored))
            .order_by("pk")
        )
