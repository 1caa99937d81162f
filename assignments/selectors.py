"""Reads for the service hot path: a project's experiments as pure assignment specs."""

import threading
from dataclasses import dataclass

from django.db.models import Count, Max

from assignments.features import ExperimentSpec, VariantSpec
from experiments.models import Experiment, ExperimentStatus, Project

SERVED_STATUSES = (
    ExperimentStatus.RUNNING,
    ExperimentStatus.PAUSED,
    ExperimentStatus.ROLLED_BACK,
    ExperimentStatus.CONCLUDED,
)


@dataclass(frozen=True)
class ProjectSpecs:
    """Everything /assign, /events and /features need about a project's experiments."""

    version: tuple
    specs: dict[str, ExperimentSpec]
    experiment_ids: dict[str, int]
    variant_ids: dict[tuple[str, str], int]
    statuses: dict[str, str]


_cache: dict[int, ProjectSpecs] = {}
_lock = threading.Lock()


def _version(project: Project) -> tuple:
    # One cheap query per request tells whether any definition changed (any process may edit).
    agg = Experiment.objects.filter(project=project).aggregate(
        updated=Max("updated_at"), count=Count("id")
    )
    return (agg["updated"], agg["count"])


def project_specs(project: Project) -> ProjectSpecs:
    version = _version(project)
    cached = _cache.get(project.pk)
    if cached is not None and cached.version == version:
        return cached
    specs: dict[str, ExperimentSpec] = {}
    experiment_ids: dict[str, int] = {}
    variant_ids: dict[tuple[str, str], int] = {}
    statuses: dict[str, str] = {}
    experiments = (
        Experiment.objects.filter(project=project)
        .exclude(status=ExperimentStatus.DRAFT)
        .prefetch_related("variants")
    )
    for experiment in experiments:
        variants = list(experiment.variants.all())
        experiment_ids[experiment.key] = experiment.pk
        statuses[experiment.key] = experiment.status
        for v in variants:
            variant_ids[(experiment.key, v.key)] = v.pk
        specs[experiment.key] = experiment_spec(experiment, variants)
    built = ProjectSpecs(version, specs, experiment_ids, variant_ids, statuses)
    with _lock:
        _cache[project.pk] = built
    return built


def experiment_spec(experiment: Experiment, variants: list | None = None) -> ExperimentSpec:
    variants = variants if variants is not None else list(experiment.variants.all())
    namespace = None
    if experiment.layer:
        namespace = (experiment.layer, experiment.layer_start, experiment.layer_end)
    shipped = None
    if experiment.status == ExperimentStatus.CONCLUDED and experiment.decision_variant:
        shipped = experiment.decision_variant
    return ExperimentSpec(
        key=experiment.key,
        seed=experiment.seed,
        hash_attribute=experiment.hash_attribute,
        coverage=experiment.coverage,
        variants=tuple(
            VariantSpec(key=v.key, weight=v.weight, value=v.value, is_control=v.is_control)
            for v in variants
        ),
        condition=experiment.targeting or None,
        namespace=namespace,
        status=experiment.status,
        shipped_variant=shipped,
        phase=experiment.phase,
    )
