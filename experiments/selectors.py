"""Reads on experiment definitions, and who may do what in a project."""

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from bucketing.flags import SegmentSpec, segment_condition
from bucketing.holdout import HoldoutSpec
from bucketing.payload import ExperimentSpec, VariantSpec
from experiments.models import (
    RAMP_STAGE_DEFAULT_HOURS,
    ApiKey,
    AuditLog,
    Environment,
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    Membership,
    Metric,
    Project,
    Role,
    Segment,
)

# What each role may do; superusers may do everything everywhere.
PERMISSIONS: dict[str, set[str]] = {
    Role.ADMIN: {"read", "edit", "export", "manage"},
    Role.EDITOR: {"read", "edit", "export"},
    Role.ANALYST: {"read", "export"},
    Role.VIEWER: {"read"},
}


def role_of(user: AbstractBaseUser | AnonymousUser, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, project=project).only("role").first()
    return membership.role if membership else None


def user_can(user: AbstractBaseUser | AnonymousUser, project: Project, permission: str) -> bool:
    role = role_of(user, project)
    return role is not None and permission in PERMISSIONS[role]


def projects_for_user(user: AbstractBaseUser) -> QuerySet[Project]:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_get_for_user(user: AbstractBaseUser | AnonymousUser, slug: str) -> Project:
    """The project, or 404 when it does not exist or the user is no member (no existence leak)."""
    project = Project.objects.filter(slug=slug).first()
    if project is None or role_of(user, project) is None:
        raise Http404("No such project.")
    return project


def experiments_for_project(project: Project) -> QuerySet[Experiment]:
    return (
        Experiment.objects.filter(project=project)
        .select_related("project", "owner", "segment")
        .prefetch_related(
            "variants",
            Prefetch(
                "experiment_metrics",
                queryset=ExperimentMetric.objects.select_related("metric"),
            ),
        )
    )


def experiment_get(project: Project, key: str) -> Experiment:
    experiment = experiments_for_project(project).filter(key=key).first()
    if experiment is None:
        raise Http404(f"No experiment '{key}' in this project.")
    return experiment


def api_key_active_by_prefix(prefix: str) -> ApiKey | None:
    return (
        ApiKey.objects.select_related("project", "environment")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )


def environment_by_browser_key(key: str) -> Environment | None:
    """The environment whose public browser key this is (with its project), or None."""
    if not key or len(key) > 64:
        return None
    return Environment.objects.select_related("project").filter(browser_key=key).first()


# --- pages: lists, audit trail, ramp plan -----------------------------------------------------


def experiments_search(
    project: Project, *, q: str = "", status: str = "", owner: str = ""
) -> QuerySet[Experiment]:
    """The project's experiments, filtered by status, owner (username) and free text."""
    experiments = experiments_for_project(project)
    if status:
        experiments = experiments.filter(status=status)
    if owner:
        experiments = experiments.filter(owner__username=owner)
    if q:
        experiments = experiments.filter(
            Q(key__icontains=q) | Q(name__icontains=q) | Q(hypothesis__icontains=q)
        )
    return experiments


def experiment_status_counts(project: Project) -> dict[str, int]:
    rows = Experiment.objects.filter(project=project).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


@dataclass(frozen=True)
class MetricUsage:
    metric: Metric
    experiments: list[str]  # keys of the experiments that use it
    live: list[str]  # the running or paused ones among them


def metrics_with_usage(project: Project) -> list[MetricUsage]:
    uses: dict[int, list[tuple[str, str]]] = {}
    for metric_id, key, status in ExperimentMetric.objects.filter(
        experiment__project=project
    ).values_list("metric_id", "experiment__key", "experiment__status"):
        uses.setdefault(metric_id, []).append((key, status))
    live_statuses = (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
    return [
        MetricUsage(
            metric=m,
            experiments=sorted(k for k, _ in uses.get(m.pk, [])),
            live=sorted(k for k, s in uses.get(m.pk, []) if s in live_statuses),
        )
        for m in Metric.objects.filter(project=project)
    ]


def metric_get(project: Project, key: str) -> Metric:
    metric = Metric.objects.filter(project=project, key=key).first()
    if metric is None:
        raise Http404(f"No metric '{key}' in this project.")
    return metric


def members_for_project(project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )


def api_keys_for_project(project: Project) -> QuerySet[ApiKey]:
    return (
        ApiKey.objects.filter(project=project)
        .select_related("created_by", "environment")
        .order_by("revoked_at", "-created_at")
    )


def _display(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any

    @property
    def before_text(self) -> str:
        return _display(self.before)

    @property
    def after_text(self) -> str:
        return _display(self.after)


@dataclass(frozen=True)
class AuditEntry:
    log: AuditLog
    changes: list[Change]


def _changes(before: Any, after: Any) -> list[Change]:
    """Field-by-field differences between two audit pictures (dicts), or one whole-value row."""
    if isinstance(before, dict) or isinstance(after, dict):
        before = before if isinstance(before, dict) else {}
        after = after if isinstance(after, dict) else {}
        keys = list(dict.fromkeys([*before, *after]))
        return [
            Change(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)
        ]
    if before == after:
        return []
    return [Change("value", before, after)]


def audit_log_for_experiment(experiment: Experiment, limit: int = 200) -> list[AuditEntry]:
    logs = AuditLog.objects.filter(experiment=experiment).select_related("actor")[:limit]
    return [AuditEntry(log, _changes(log.before, log.after)) for log in logs]


def audit_log_for_target(project: Project, target: str, limit: int = 200) -> list[AuditEntry]:
    """Entries about one target ("flag:<key>", "segment:<key>"), or a part of it written
    "<target>@<part>" (a flag in one environment)."""
    logs = (
        AuditLog.objects.filter(project=project)
        .filter(Q(target=target) | Q(target__startswith=f"{target}@"))
        .select_related("actor")[:limit]
    )
    return [AuditEntry(log, _changes(log.before, log.after)) for log in logs]


def audit_log_for_project(project: Project, limit: int = 100) -> list[AuditEntry]:
    logs = AuditLog.objects.filter(project=project).select_related("actor")[:limit]
    return [AuditEntry(log, _changes(log.before, log.after)) for log in logs]


# Which lifecycle actions a status allows (the services enforce it; pages only offer these).
ACTIONS_BY_STATUS: dict[str, tuple[str, ...]] = {
    ExperimentStatus.DRAFT: ("edit", "start", "delete"),
    ExperimentStatus.RUNNING: ("edit", "ramp", "pause", "conclude", "rollback"),
    ExperimentStatus.PAUSED: ("edit", "resume", "ramp", "conclude", "rollback"),
    ExperimentStatus.CONCLUDED: (),
    ExperimentStatus.ROLLED_BACK: (),
}


RAMP_MIN_UNITS_PER_ARM = 100  # a stage never advances before every arm has this many units


@dataclass(frozen=True)
class RampStatus:
    stages: list[dict[str, Any]]
    current_index: int  # the stage reached (meaningless before the start)
    next_coverage: float | None  # the next stage's coverage, None past the last one
    due_at: datetime | None  # when the current stage has run its minimum duration
    can_advance: bool  # whether a ramp to the next stage would be accepted now (time only)
    min_units: int = RAMP_MIN_UNITS_PER_ARM  # units per arm before the next stage
    waiting_for: tuple[str, ...] = ()  # what the automatic advance still waits for

    @property
    def ready(self) -> bool:
        """The automation may advance: time, sample and a next stage."""
        return self.can_advance and not self.waiting_for


def ramp_min_units(experiment: Experiment, stage_index: int) -> int:
    """Units per arm before the stage may advance: the stage's own ``min_units``, else the
    stage's share of the planned sample per arm (coverage x planned / arms), at least
    RAMP_MIN_UNITS_PER_ARM, so a guardrail has data to judge before more users are exposed."""
    stages = experiment.ramp_stages or []
    if not stages:
        return RAMP_MIN_UNITS_PER_ARM
    stage = stages[min(stage_index, len(stages) - 1)]
    if stage.get("min_units"):
        return max(int(stage["min_units"]), 1)
    arms = max(experiment.variants.count(), 2)
    planned = experiment.planned_sample_size or 0
    share = math.ceil(planned * float(stage.get("coverage", 1.0)) / arms)
    return max(RAMP_MIN_UNITS_PER_ARM, share)


def ramp_stage_due_at(experiment: Experiment) -> datetime | None:
    """When the current ramp stage has run its minimum duration (None without a plan)."""
    stages = experiment.ramp_stages or []
    if not stages or experiment.ramp_stage_started_at is None:
        return None
    stage = stages[min(experiment.ramp_stage_index, len(stages) - 1)]
    return experiment.ramp_stage_started_at + timedelta(
        hours=float(stage.get("min_hours", RAMP_STAGE_DEFAULT_HOURS))
    )


def ramp_status(
    experiment: Experiment,
    now: datetime | None = None,
    units: dict[str, int] | None = None,
) -> RampStatus | None:
    """Where the ramp plan stands; with ``units`` (per variant key, from the latest snapshot)
    also what the automatic advance waits for: the stage's minimum duration and sample."""
    stages = list(experiment.ramp_stages or [])
    if not stages:
        return None
    index = min(experiment.ramp_stage_index, len(stages) - 1)
    above = [float(s["coverage"]) for s in stages if float(s["coverage"]) > experiment.coverage]
    nxt = above[0] if above else None
    due = ramp_stage_due_at(experiment)
    now = now or timezone.now()
    live = experiment.status in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
    can_advance = live and nxt is not None and (due is None or now >= due)
    min_units = ramp_min_units(experiment, index)
    waiting: list[str] = []
    if nxt is not None:
        if due is not None and now < due:
            waiting.append(f"the stage's minimum duration (until {due:%Y-%m-%d %H:%M} UTC)")
        have = min((units or {}).values(), default=0) if units else 0
        if have < min_units:
            waiting.append(f"{min_units:,} units in every arm ({have:,} in the smallest so far)")
    return RampStatus(stages, index, nxt, due, can_advance, min_units, tuple(waiting))


# --- serving: the pure spec that assignment evaluates -------------------------------------------


def segment_spec(segment: Segment) -> SegmentSpec:
    """The pure spec of a saved segment (flag rules and experiments' targeting use it)."""
    return SegmentSpec(
        key=segment.key,
        condition=segment.condition or None,
        include=tuple(str(u) for u in segment.include or ()),
        exclude=tuple(str(u) for u in segment.exclude or ()),
    )


def experiment_spec(
    experiment: Experiment, variants: list | None = None, holdout: HoldoutSpec | None = None
) -> ExperimentSpec:
    """The pure spec of one experiment; raises ValueError when its definition is inconsistent.
    A saved segment is AND-ed with the targeting condition; ``holdout`` is the project's running
    holdout (experiments.holdouts.served_holdout), kept out of the experiment."""
    variants = variants if variants is not None else list(experiment.variants.all())
    namespace = None
    if experiment.layer:
        namespace = (experiment.layer, experiment.layer_start, experiment.layer_end)
    shipped = None
    if experiment.status == ExperimentStatus.CONCLUDED and experiment.decision_variant:
        shipped = experiment.decision_variant
    condition = experiment.targeting or None
    if experiment.segment_id is not None:
        audience = segment_condition(segment_spec(experiment.segment))
        condition = {"$and": [condition, audience]} if condition else audience
    return ExperimentSpec(
        key=experiment.key,
        seed=experiment.seed,
        hash_attribute=experiment.hash_attribute,
        coverage=experiment.coverage,
        variants=tuple(
            VariantSpec(key=v.key, weight=v.weight, value=v.value, is_control=v.is_control)
            for v in variants
        ),
        condition=condition,
        namespace=namespace,
        status=experiment.status,
        shipped_variant=shipped,
        phase=experiment.phase,
        holdout=holdout,
    )
