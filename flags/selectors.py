"""Reads on flags: the served specs of an environment (cached by version, for the hot paths:
payloads, /evaluate, streaming), lists, segment usage and stale flags."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from bucketing.flags import FlagSpec, Prerequisite, RuleSpec, SegmentSpec, Variation
from bucketing.holdout import HoldoutSpec
from bucketing.payload import ExperimentSpec
from core.cache import ProcessCache
from experiments.holdouts import (
    ServedHoldout,
    holdout_changed_at,
    holdout_version_sql,
    served_holdout,
)
from experiments.models import Environment, Experiment, Project, Segment
from experiments.selectors import experiment_spec, segment_spec
from flags.models import (
    ChangeRequest,
    Flag,
    FlagEnvironment,
    FlagUsage,
    ScheduledChange,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvironmentFlags:
    """Every flag served in one environment, as pure specs.

    ``specs`` holds the served flags (not archived, spec buildable); a flag whose spec cannot be
    built is left out and logged (``broken``), never breaking the others. ``flag_ids`` and
    ``variations`` cover every flag of the project, archived ones included, so late exposures
    of a flag just archived are still recognised.
    """

    version: tuple  # opaque: equal tokens mean nothing changed
    specs: dict[str, FlagSpec]
    flag_ids: dict[str, int]
    variations: dict[str, tuple[str, ...]]
    updated_at: datetime | None = None
    archived: frozenset[str] = frozenset()
    broken: dict[str, str] = field(default_factory=dict)
    holdout: ServedHoldout | None = None  # the running holdout, in production only


_served: ProcessCache[EnvironmentFlags] = ProcessCache("environment flags")

# Everything a served flag depends on, in one statement: the project's flags, this
# environment's configs, the segments and the experiments (experiment rules). Services bump
# updated_at on every change; counts catch deletions. Raw SQL: it runs whenever the serving
# generation changed or the cached flags are a few seconds old (core/cache.py).
_VERSION_SQL = """
SELECT
  (SELECT MAX(updated_at) FROM flags_flag WHERE project_id = %(p)s),
  (SELECT COUNT(*) FROM flags_flag WHERE project_id = %(p)s),
  (SELECT MAX(updated_at) FROM flags_flagenvironment WHERE environment_id = %(e)s),
  (SELECT COUNT(*) FROM flags_flagenvironment WHERE environment_id = %(e)s),
  (SELECT MAX(updated_at) FROM experiments_segment WHERE project_id = %(p)s),
  (SELECT COUNT(*) FROM experiments_segment WHERE project_id = %(p)s),
  (SELECT MAX(updated_at) FROM experiments_experiment WHERE project_id = %(p)s),
  (SELECT COUNT(*) FROM experiments_experiment WHERE project_id = %(p)s),
  """ + holdout_version_sql("%(p)s")


def environment_version(environment: Environment) -> tuple:
    """The opaque version of what the environment serves (one cheap query)."""
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL, {"p": environment.project_id, "e": environment.pk})
        return tuple(cursor.fetchone())


def rule_spec(
    rule: Mapping[str, Any],
    segments: Mapping[str, SegmentSpec],
    experiments: Mapping[str, ExperimentSpec],
) -> RuleSpec:
    """One stored rule (the API's JSON shape) as a resolved spec; ValueError when it names a
    segment or experiment that is gone or cannot be served."""
    kind = rule.get("type")
    segment = None
    if rule.get("segment"):
        if rule["segment"] not in segments:
            raise ValueError(f"rule {rule.get('id')!r}: no segment {rule['segment']!r}")
        segment = segments[rule["segment"]]
    experiment = None
    if kind == "experiment":
        experiment = experiments.get(rule.get("experiment"))
        if experiment is None:
            raise ValueError(f"rule {rule.get('id')!r}: experiment {rule.get('experiment')!r}")
    return RuleSpec(
        id=str(rule.get("id") or ""),
        type=str(kind),
        condition=rule.get("condition") or None,
        segment=segment,
        variation=rule.get("variation"),
        hash_attribute=rule.get("hash_attribute") or "id",
        weights=tuple((rule.get("weights") or {}).items()),
        experiment=experiment,
    )


def flag_spec(
    flag: Flag,
    config: FlagEnvironment,
    segments: Mapping[str, SegmentSpec],
    experiments: Mapping[str, ExperimentSpec],
    holdout: HoldoutSpec | None = None,
) -> FlagSpec:
    """A flag in one environment as a pure spec; ValueError when it cannot be served.
    ``holdout``: the project's running holdout, in production (docs/flags.md "Holdout")."""
    return FlagSpec(
        key=flag.key,
        type=flag.type,
        variations=tuple(Variation(v["key"], v["value"]) for v in flag.variations),
        off_variation=flag.off_variation,
        seed=flag.seed,
        enabled=config.enabled,
        default_variation=config.default_variation,
        rules=tuple(rule_spec(r, segments, experiments) for r in config.rules or []),
        prerequisites=tuple(
            Prerequisite(p["flag"], tuple(p["variations"])) for p in flag.prerequisites or []
        ),
        holdout=holdout,
    )


def _experiment_specs(project_id: int, keys: set[str]) -> dict[str, ExperimentSpec]:
    specs = {}
    experiments = (
        Experiment.objects.filter(project_id=project_id, key__in=keys)
        .select_related("segment")
        .prefetch_related("variants")
    )
    for experiment in experiments:
        try:
            specs[experiment.key] = experiment_spec(experiment, list(experiment.variants.all()))
        except ValueError as exc:
            logger.error("Experiment %s cannot be a flag rule: %s", experiment.key, exc)
    return specs


def _build(environment: Environment, version: tuple) -> EnvironmentFlags:
    flags = list(Flag.objects.filter(project_id=environment.project_id))
    configs = {c.flag_id: c for c in FlagEnvironment.objects.filter(environment=environment)}
    segments = {
        s.key: segment_spec(s) for s in Segment.objects.filter(project_id=environment.project_id)
    }
    experiment_keys = {
        r.get("experiment")
        for c in configs.values()
        for r in c.rules or []
        if r.get("type") == "experiment"
    }
    experiments = _experiment_specs(environment.project_id, experiment_keys)
    specs: dict[str, FlagSpec] = {}
    broken: dict[str, str] = {}
    # The running holdout applies in production only (docs/flags.md "Holdout").
    holdout = served_holdout(environment.project_id) if environment.production else None
    updated_at = holdout_changed_at(environment.project_id) if environment.production else None
    for flag in flags:
        config = configs.get(flag.pk)
        stamps = [flag.updated_at] + ([config.updated_at] if config else [])
        updated_at = max([updated_at, *stamps] if updated_at else stamps)
        if flag.archived:
            continue
        if config is None:
            broken[flag.key] = "no configuration in this environment"
            continue
        try:
            specs[flag.key] = flag_spec(
                flag, config, segments, experiments, holdout.spec if holdout else None
            )
        except (ValueError, KeyError, TypeError) as exc:
            broken[flag.key] = str(exc)
            logger.error("Not serving flag %s in %s: %s", flag.key, environment.key, exc)
    return EnvironmentFlags(
        version=version,
        specs=specs,
        flag_ids={f.key: f.pk for f in flags},
        variations={f.key: tuple(v["key"] for v in f.variations) for f in flags},
        updated_at=updated_at,
        archived=frozenset(f.key for f in flags if f.archived),
        broken=broken,
        holdout=holdout,
    )


def environment_flags(environment: Environment) -> EnvironmentFlags:
    """The environment's served flags, kept in the process (`core.cache.ProcessCache`: no query
    while the serving generation is unchanged) and rebuilt only when something they depend on
    changed (the version query)."""
    return _served.get_versioned(
        environment.pk,
        lambda: environment_version(environment),
        lambda version: _build(environment, version),
    )


# --- pages and the API --------------------------------------------------------------------------


def environments_for_project(project: Project) -> QuerySet[Environment]:
    return Environment.objects.filter(project=project)


def environment_get(project: Project, key: str) -> Environment:
    environment = Environment.objects.filter(project=project, key=key).select_related("project")
    found = environment.first()
    if found is None:
        raise Http404(f"No environment '{key}' in this project.")
    return found


def flag_list(
    project: Project,
    *,
    q: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    archived: bool | None = False,
) -> QuerySet[Flag]:
    """The project's flags with their configs (environment order); ``archived`` None = all."""
    flags = (
        Flag.objects.filter(project=project)
        .select_related("project", "owner")
        .prefetch_related("configs__environment")
    )
    if archived is not None:
        flags = flags.filter(archived=archived)
    if q:
        flags = flags.filter(
            Q(key__icontains=q) | Q(name__icontains=q) | Q(description__icontains=q)
        )
    if owner:
        flags = flags.filter(owner__username=owner)
    if tag:
        # Tags are a JSON list: filter in Python (portable across SQLite and PostgreSQL).
        ids = [pk for pk, tags in flags.values_list("pk", "tags") if tag in (tags or [])]
        flags = flags.filter(pk__in=ids)
    return flags


def flag_get(project: Project, key: str) -> Flag:
    flag = flag_list(project, archived=None).filter(key=key).first()
    if flag is None:
        raise Http404(f"No flag '{key}' in this project.")
    return flag


def segment_get(project: Project, key: str) -> Segment:
    segment = Segment.objects.filter(project=project, key=key).select_related("project").first()
    if segment is None:
        raise Http404(f"No segment '{key}' in this project.")
    return segment


def segment_usage(project: Project) -> dict[str, list[str]]:
    """Segment key -> where it is used: "flag:<key>@<environment>", "experiment:<key>"."""
    usage: dict[str, list[str]] = {
        key: [] for key in Segment.objects.filter(project=project).values_list("key", flat=True)
    }
    configs = FlagEnvironment.objects.filter(flag__project=project).values_list(
        "flag__key", "environment__key", "rules"
    )
    for flag_key, env_key, rules in configs:
        for key in dict.fromkeys(r.get("segment") for r in rules or [] if r.get("segment")):
            usage.setdefault(key, []).append(f"flag:{flag_key}@{env_key}")
    experiments = Experiment.objects.filter(project=project, segment__isnull=False)
    for key, segment_key in experiments.values_list("key", "segment__key"):
        usage.setdefault(segment_key, []).append(f"experiment:{key}")
    return {key: sorted(used) for key, used in usage.items()}


def change_requests_for_project(
    project: Project, status: str | None = None
) -> QuerySet[ChangeRequest]:
    requests = ChangeRequest.objects.filter(project=project).select_related(
        "flag", "environment", "requested_by", "reviewed_by"
    )
    return requests.filter(status=status) if status else requests


MAX_ID = 2**63 - 1  # larger ids cannot exist (and overflow the database's bigint)


def change_request_get(project: Project, request_id: int | str) -> ChangeRequest:
    if int(request_id) > MAX_ID:
        raise Http404("No such change request in this project.")
    found = change_requests_for_project(project).filter(pk=request_id).first()
    if found is None:
        raise Http404("No such change request in this project.")
    return found


def scheduled_changes_for_flag(flag: Flag) -> QuerySet[ScheduledChange]:
    return ScheduledChange.objects.filter(flag=flag).select_related("environment", "created_by")


def scheduled_change_get(flag: Flag, schedule_id: int) -> ScheduledChange:
    if int(schedule_id) > MAX_ID:
        raise Http404("No such scheduled change for this flag.")
    found = scheduled_changes_for_flag(flag).filter(pk=schedule_id).first()
    if found is None:
        raise Http404("No such scheduled change for this flag.")
    return found


# --- hygiene: stale flags -----------------------------------------------------------------------


@dataclass(frozen=True)
class StaleFlag:
    flag: Flag
    reason: str
    variation: str | None = None  # the one variation served, when known


def served_everywhere(flag: Flag, config: FlagEnvironment) -> str | None:
    """The one variation this config serves to everyone, or None when it may serve several:
    off; on with no rules (the default); or a first rule with no condition nor segment that is
    a force or a rollout with one variation at 100% (it matches everyone: later rules are
    never reached)."""
    if not config.enabled:
        return flag.off_variation
    for rule in config.rules or []:
        if rule.get("type") == "experiment" or rule.get("condition") or rule.get("segment"):
            return None
        if rule.get("type") == "force":
            return rule.get("variation")
        full = [k for k, share in (rule.get("weights") or {}).items() if share >= 1 - 1e-9]
        return full[0] if full else None
    return config.default_variation


def _usage_variations(project: Project, since: datetime) -> dict[int, set[str]]:
    used: dict[int, set[str]] = {}
    rows = FlagUsage.objects.filter(
        flag__project=project, day__gte=since.date(), count__gt=0
    ).values_list("flag_id", "variation")
    for flag_id, variation in rows.distinct():
        used.setdefault(flag_id, set()).add(variation)
    return used


def stale_flags(
    project: Project, days: int | None = None, now: datetime | None = None
) -> list[StaleFlag]:
    """Temporary, not archived flags that look done: in every environment they serve one
    variation to everyone and their configs have not changed for ``days`` days (default
    ABACUS_STALE_FLAG_DAYS); or their evaluations over the last ``days`` days show one
    variation only. Each with the reason."""
    days = settings.ABACUS_STALE_FLAG_DAYS if days is None else days
    now = now or timezone.now()
    since = now - timedelta(days=days)
    flags = (
        Flag.objects.filter(project=project, temporary=True, archived=False)
        .annotate(last_config=Max("configs__updated_at"))
        .prefetch_related("configs__environment")
        .order_by("key")
    )
    used = _usage_variations(project, since)
    stale = []
    for flag in flags:
        configs = list(flag.configs.all())
        served = {served_everywhere(flag, c) for c in configs}
        quiet = max([flag.updated_at, flag.last_config or flag.updated_at]) <= since
        if configs and None not in served and quiet:
            text = ", ".join(
                sorted(f"{c.environment.key}: {served_everywhere(flag, c)}" for c in configs)
            )
            stale.append(
                StaleFlag(
                    flag,
                    f"Serves one variation to everyone in every environment ({text}), "
                    f"unchanged for {days} days.",
                    served.pop() if len(served) == 1 else None,
                )
            )
        elif len(used.get(flag.pk, ())) == 1:
            (only,) = used[flag.pk]
            stale.append(
                StaleFlag(flag, f"Every evaluation in the last {days} days got '{only}'.", only)
            )
    return stale
