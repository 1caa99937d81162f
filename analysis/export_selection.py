"""Which snapshots and rows an export holds, streamed in (experiment, time) order
(analysis.exports writes them as CSV, JSON or Parquet)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from analysis.models import LookKind, ResultRow, ResultSnapshot
from analysis.results import latest_snapshot_subquery
from experiments.models import Experiment, ExperimentMetric, Project


@dataclass(frozen=True)
class ExportFilter:
    """Which snapshots of a project go into an export; empty tuples mean "all"."""

    project: Project
    experiments: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None  # snapshot data_through >= since
    until: datetime | None = None  # snapshot data_through < until
    latest_only: bool = False
    looks_only: bool = False  # only snapshots that were a counted look or the final analysis


# The snapshots that counted as looks: a look may act, the final analysis decides.
COUNTED = (LookKind.LOOK, LookKind.FINAL)


@dataclass
class SnapshotRows:
    """One snapshot with its rows and the metric definitions that describe them."""

    snapshot: ResultSnapshot
    rows: list[ResultRow]
    definitions: dict[int, ExperimentMetric]  # by metric id
    look_number: int | None = None  # 1, 2, ... among the phase's counted looks; None otherwise


def export_snapshot_queryset(flt: ExportFilter) -> QuerySet[ResultSnapshot]:
    snapshots = ResultSnapshot.objects.filter(experiment__project=flt.project)
    if flt.experiments:
        snapshots = snapshots.filter(experiment__key__in=flt.experiments)
    if flt.statuses:
        snapshots = snapshots.filter(experiment__status__in=flt.statuses)
    if flt.since:
        snapshots = snapshots.filter(data_through__gte=flt.since)
    if flt.until:
        snapshots = snapshots.filter(data_through__lt=flt.until)
    if flt.latest_only:
        latest = Experiment.objects.filter(project=flt.project).annotate(
            latest_snapshot_id=latest_snapshot_subquery("pk")
        )
        snapshots = snapshots.filter(pk__in=latest.values("latest_snapshot_id"))
    if flt.looks_only:
        snapshots = snapshots.filter(look_kind__in=COUNTED)
    return snapshots


def _look_numbers(flt: ExportFilter) -> dict[int, int]:
    """Each counted look's number within its experiment phase (by data cut-off), counted over
    all of the phase's looks so that a ``since`` filter does not renumber them. One small tuple
    per look snapshot of the exported experiments."""
    looks = ResultSnapshot.objects.filter(experiment__project=flt.project, look_kind__in=COUNTED)
    if flt.experiments:
        looks = looks.filter(experiment__key__in=flt.experiments)
    if flt.statuses:
        looks = looks.filter(experiment__status__in=flt.statuses)
    numbers: dict[int, int] = {}
    counts: dict[tuple[int, int], int] = {}
    for pk, experiment_id, phase in looks.order_by(
        "experiment_id", "phase", "data_through", "pk"
    ).values_list("pk", "experiment_id", "phase"):
        counts[(experiment_id, phase)] = counts.get((experiment_id, phase), 0) + 1
        numbers[pk] = counts[(experiment_id, phase)]
    return numbers


def export_row_count(flt: ExportFilter) -> int:
    return ResultRow.objects.filter(snapshot__in=export_snapshot_queryset(flt)).count()


def export_snapshots(flt: ExportFilter, *, chunk_size: int = 2000) -> Iterator[SnapshotRows]:
    """The filtered snapshots in (experiment, time) order, one at a time, streaming their rows
    from the database in chunks so memory stays flat in the size of the export."""
    definitions: dict[int, dict[int, ExperimentMetric]] = {}
    for em in ExperimentMetric.objects.filter(experiment__project=flt.project).select_related(
        "metric"
    ):
        definitions.setdefault(em.experiment_id, {})[em.metric_id] = em
    numbers = _look_numbers(flt)
    rows = (
        ResultRow.objects.filter(snapshot__in=export_snapshot_queryset(flt))
        .select_related("snapshot", "snapshot__experiment", "snapshot__experiment__project")
        .order_by("snapshot__experiment__key", "snapshot__data_through", "snapshot_id", "id")
        .iterator(chunk_size=chunk_size)
    )
    current: SnapshotRows | None = None
    for row in rows:
        if current is None or current.snapshot.pk != row.snapshot_id:
            if current is not None:
                yield current
            snapshot = row.snapshot
            current = SnapshotRows(
                snapshot,
                [],
                definitions.get(snapshot.experiment_id, {}),
                numbers.get(snapshot.pk),
            )
        current.rows.append(row)
    if current is not None:
        yield current
