"""Reads for the service hot path: a project's experiments as pure assignment specs."""

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection

from assignments.features import ExperimentSpec, VariantSpec, build_payload, etag
from experiments.models import Experiment, ExperimentStatus, Project

logger = logging.getLogger(__name__)

SERVED_STATUSES = (
    ExperimentStatus.RUNNING,
    ExperimentStatus.PAUSED,
    ExperimentStatus.ROLLED_BACK,
    ExperimentStatus.CONCLUDED,
)


@dataclass(frozen=True)
class ProjectSpecs:
    """Everything /assign, /events and /features need about a project's non-draft experiments.

    ``specs`` holds the experiments that can be served; one whose definition is inconsistent is
    left out of it (and logged) so it never breaks the others, but stays in ``experiment_ids``
    and ``variant_ids`` so its late exposures are still accepted.
    """

    version: tuple  # an opaque token: equal tokens mean nothing changed
    specs: dict[str, ExperimentSpec]
    experiment_ids: dict[str, int]
    variant_ids: dict[tuple[str, str], int]
    statuses: dict[str, str]
    phases: dict[str, int] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # key -> why it is not served
    updated_at: datetime | None = None  # the latest change of a served experiment
    # key -> when the current phase started: analyses count exposures from then on.
    phase_starts: dict[str, datetime] = field(default_factory=dict)


_cache: dict[int, ProjectSpecs] = {}
_payloads: dict[int, tuple[tuple, dict[str, Any], str]] = {}
_lock = threading.Lock()


def _version(project: Project) -> tuple:
    # One cheap query per request tells whether any definition changed (any process may edit):
    # every lifecycle service saves the experiment, which bumps updated_at. Raw SQL: this runs
    # on every request, and the ORM would spend longer compiling it than the database running it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MAX(updated_at), COUNT(*) FROM experiments_experiment WHERE project_id = %s",
            [project.pk],
        )
        return tuple(cursor.fetchone())


def project_specs(project: Project) -> ProjectSpecs:
    """The project's served experiments, rebuilt only when a definition changed."""
    version = _version(project)
    cached = _cache.get(project.pk)
    if cached is not None and cached.version == version:
        return cached
    specs: dict[str, ExperimentSpec] = {}
    experiment_ids: dict[str, int] = {}
    variant_ids: dict[tuple[str, str], int] = {}
    statuses: dict[str, str] = {}
    phases: dict[str, int] = {}
    phase_starts: dict[str, datetime] = {}
    broken: dict[str, str] = {}
    updated_at: datetime | None = None
    experiments = (
        Experiment.objects.filter(project=project)
        .exclude(status=ExperimentStatus.DRAFT)
        .prefetch_related("variants")
    )
    for experiment in experiments:
        variants = list(experiment.variants.all())  # ordered by position: fixes the ranges
        experiment_ids[experiment.key] = experiment.pk
        statuses[experiment.key] = experiment.status
        phases[experiment.key] = experiment.phase
        phase_start = experiment.phase_started_at or experiment.started_at
        if phase_start is not None:
            phase_starts[experiment.key] = phase_start
        if updated_at is None or experiment.updated_at > updated_at:
            updated_at = experiment.updated_at
        for v in variants:
            variant_ids[(experiment.key, v.key)] = v.pk
        try:
            specs[experiment.key] = experiment_spec(experiment, variants)
        except ValueError as exc:
            broken[experiment.key] = str(exc)
            logger.error(
                "Not serving experiment %s of project %s: %s", experiment.key, project.slug, exc
            )
    built = ProjectSpecs(
        version,
        specs,
        experiment_ids,
        variant_ids,
        statuses,
        phases,
        broken,
        updated_at,
        phase_starts,
    )
    with _lock:
        _cache[project.pk] = built
    return built


def features_payload(project: Project) -> tuple[dict[str, Any], str]:
    """The GrowthBook features payload of the project and its ETag, rebuilt only on change."""
    specs = project_specs(project)
    cached = _payloads.get(project.pk)
    if cached is not None and cached[0] == specs.version:
        return cached[1], cached[2]
    payload = build_payload(specs.specs.values(), date_updated=specs.updated_at)
    tag = etag(payload)
    with _lock:
        _payloads[project.pk] = (specs.version, payload, tag)
    return payload, tag


def experiment_spec(experiment: Experiment, variants: list | None = None) -> ExperimentSpec:
    """The pure spec of one experiment; raises ValueError when its definition is inconsistent."""
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
