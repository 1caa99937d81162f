"""Reads on experiment definitions, and who may do what in a project."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from analysis import stats
from experiments.models import (
    ApiKey,
    AuditLog,
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    Membership,
    Metric,
    Project,
    Role,
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
        .select_related("project", "owner")
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
        ApiKey.objects.select_related("project")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )


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
        .select_related("created_by")
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


@dataclass(frozen=True)
class RampStatus:
    stages: list[dict[str, Any]]
    current_index: int  # the stage reached (meaningless before the start)
    next_coverage: float | None  # the next stage's coverage, None past the last one
    due_at: datetime | None  # when the current stage has run its minimum duration
    can_advance: bool  # whether a ramp to the next stage would be accepted now


def ramp_stage_due_at(experiment: Experiment) -> datetime | None:
    """When the current ramp stage has run its minimum duration (None without a plan)."""
    stages = experiment.ramp_stages or []
    if not stages or experiment.ramp_stage_started_at is None:
        return None
    stage = stages[min(experiment.ramp_stage_index, len(stages) - 1)]
    return experiment.ramp_stage_started_at + timedelta(hours=float(stage.get("min_hours", 0)))


def ramp_status(experiment: Experiment, now: datetime | None = None) -> RampStatus | None:
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
    return RampStatus(stages, index, nxt, due, can_advance)


# --- planning: the pre-launch power calculator ------------------------------------------------


@dataclass(frozen=True)
class PowerPlan:
    method: str
    alpha_per_test: float  # alpha after the Bonferroni split over primaries and treatment arms
    per_arm: int  # units per variant
    total: int  # units over all variants: the planned sample size
    fixed_total: int  # what a fixed-horizon test would need
    inflation: float  # total over fixed_total: the price of peeking safely
    mde: float  # relative MDE (given, or the one the given sample detects)
    days: float | None  # at daily_units x coverage units a day


def power_plan(
    *,
    kind: str,
    baseline: float,
    alpha: float,
    method: str,
    variance: float | None = None,
    mde: float | None = None,
    sample_size: int | None = None,
    power: float = 0.8,
    variants: int = 2,
    primary_metrics: int = 1,
    daily_units: float | None = None,
    coverage: float = 1.0,
) -> PowerPlan:
    """Sample size for an MDE, or the MDE a planned sample detects, as the analysis will test it
    (alpha split by Bonferroni like analysis.services does). Raises ValueError on bad input."""
    treatments = max(1, variants - 1)
    alpha_per_test = alpha / max(1, primary_metrics) / treatments
    common = dict(
        baseline_mean=baseline,
        baseline_variance=None if kind == "binomial" else variance,
        kind=kind,
        alpha=alpha_per_test,
        power=power,
    )
    if mde is None:
        if sample_size is None:
            raise ValueError("give either an MDE or a sample size")
        mde = stats.mde_for_sample(n_per_arm=sample_size / variants, design=method, **common)
    sized = stats.power_sample_size(mde=mde, n_arms=variants, design=method, **common)
    fixed = stats.power_sample_size(mde=mde, n_arms=variants, design="fixed", **common)
    days = None
    if daily_units and coverage > 0:
        days = sized.total / (daily_units * coverage)
    return PowerPlan(
        method=method,
        alpha_per_test=alpha_per_test,
        per_arm=sized.per_arm,
        total=sized.total,
        fixed_total=fixed.total,
        inflation=sized.inflation,
        mde=mde,
        days=days,
    )
