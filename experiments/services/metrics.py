"""The metric catalog: create, update (frozen while a live experiment uses it), delete."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.errors import DomainError
from experiments.filters import clean_filters, clean_value_property, stored_filters
from experiments.models import ExperimentStatus, Metric, Project
from experiments.services.audit import audit_log_record
from experiments.services.rules import MAX_CONVERSION_WINDOW_HOURS, _same, is_number

METRIC_FIELDS = (
    "name",
    "description",
    "kind",
    "event_name",
    "denominator_event",
    "direction",
    "winsorize_quantile",
    "quantile",
    "conversion_window_hours",
    "cuped",
    "filters",
    "value_property",
)
# What a metric computes: frozen while a live experiment uses it (name and description are not).
METRIC_DEFINITION_FIELDS = (
    "kind",
    "event_name",
    "denominator_event",
    "direction",
    "winsorize_quantile",
    "quantile",
    "conversion_window_hours",
    "cuped",
    "filters",
    "value_property",
)
LIVE_STATUSES = (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)


def _metric_snapshot(metric: Metric) -> dict[str, Any]:
    return {f: getattr(metric, f) for f in ("key", *METRIC_FIELDS)}


def _metric_check(metric: Metric) -> None:
    if metric.kind == "ratio" and not metric.denominator_event:
        raise DomainError("A ratio metric needs a denominator event.", "denominator_event")
    if metric.kind != "ratio":
        metric.denominator_event = ""
    if metric.kind == "quantile":
        q = metric.quantile
        if not is_number(q) or not 0 < q < 1:
            raise DomainError(
                "A quantile metric needs its quantile, strictly between 0 and 1 (0.95 is p95).",
                "quantile",
            )
        metric.cuped = False
    else:
        metric.quantile = None
    q = metric.winsorize_quantile
    if q is not None and not 0.5 < q <= 1:
        raise DomainError(
            "The winsorization quantile must be above 0.5 and at most 1 (0.99 caps the top 1%).",
            "winsorize_quantile",
        )
    hours = metric.conversion_window_hours
    if hours is not None and (
        not is_number(hours) or hours != int(hours) or not 1 <= hours <= MAX_CONVERSION_WINDOW_HOURS
    ):
        raise DomainError(
            f"The conversion window must be a whole number of hours from 1 to "
            f"{MAX_CONVERSION_WINDOW_HOURS} (one year); 72 counts three days after exposure.",
            "conversion_window_hours",
        )
    metric.filters = stored_filters(clean_filters(metric.filters))
    metric.value_property = clean_value_property(metric.value_property, metric.kind)
    metric.full_clean()


@transaction.atomic
def metric_create(
    *, project: Project, key: str, actor: AbstractBaseUser | None = None, **fields: Any
) -> Metric:
    if Metric.objects.filter(project=project, key=key).exists():
        raise DomainError(f"A metric with key '{key}' already exists in this project.", "key")
    metric = Metric(project=project, key=key, **fields)
    _metric_check(metric)
    metric.save()
    audit_log_record(
        project=project,
        action="metric.create",
        target=key,
        actor=actor,
        after=_metric_snapshot(metric),
    )
    return metric


@transaction.atomic
def metric_update(
    *, metric: Metric, actor: AbstractBaseUser | None = None, **fields: Any
) -> Metric:
    if "key" in fields and fields["key"] != metric.key:
        raise DomainError("A metric's key cannot change once created.", "key")
    fields.pop("key", None)
    before = _metric_snapshot(metric)
    changed = [
        name
        for name in METRIC_DEFINITION_FIELDS
        if name in fields and not _same(fields[name], getattr(metric, name))
    ]
    if changed:
        live = sorted(
            metric.experiment_metrics.filter(experiment__status__in=LIVE_STATUSES).values_list(
                "experiment__key", flat=True
            )
        )
        if live:
            raise DomainError(
                f"Metric '{metric.key}' is used by live experiment(s) {', '.join(live)}: "
                f"changing its {', '.join(changed)} would change their results. "
                "Create a new metric instead (its name and description may change).",
                changed[0],
            )
    for name, value in fields.items():
        if name not in METRIC_FIELDS:
            raise DomainError(f"Unknown metric field '{name}'.", name)
        setattr(metric, name, value)
    _metric_check(metric)
    metric.save()
    audit_log_record(
        project=metric.project,
        action="metric.update",
        target=metric.key,
        actor=actor,
        before=before,
        after=_metric_snapshot(metric),
    )
    return metric


@transaction.atomic
def metric_delete(*, metric: Metric, actor: AbstractBaseUser | None = None) -> None:
    in_use = sorted(metric.experiment_metrics.values_list("experiment__key", flat=True))
    if in_use:
        raise DomainError(
            f"Metric '{metric.key}' is used by experiment(s) {', '.join(in_use)}; "
            "remove it from them first.",
            "key",
        )
    audit_log_record(
        project=metric.project,
        action="metric.delete",
        target=metric.key,
        actor=actor,
        before=_metric_snapshot(metric),
    )
    metric.delete()
