"""What the flag pages read beyond the selectors: rows for the list, usage of the last days,
the preview of one unit in every environment, change requests with their before and after."""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Sum
from django.utils import timezone

from bucketing.flags import FlagResult, evaluate_flags
from experiments.models import Environment, Project
from flags.models import ChangeRequest, ChangeRequestStatus, Flag, FlagEnvironment, FlagUsage
from flags.selectors import environment_flags, environments_for_project, stale_flags

USAGE_DAYS = 7


def environments_of(project: Project) -> list[Environment]:
    return list(environments_for_project(project))


def configs_of(flag: Flag) -> dict[int, FlagEnvironment]:
    """The flag's configuration per environment id."""
    return {c.environment_id: c for c in FlagEnvironment.objects.filter(flag=flag)}


def variation_keys(flag: Flag) -> list[str]:
    return [v["key"] for v in flag.variations or []]


@dataclass
class EnvironmentState:
    environment: Environment
    config: FlagEnvironment | None

    @property
    def enabled(self) -> bool:
        return bool(self.config and self.config.enabled)


@dataclass
class FlagRow:
    flag: Flag
    states: list[EnvironmentState]
    last_evaluated: datetime | None = None
    stale: str = ""  # why it looks stale


def flag_rows(
    flags: list[Flag], environments: list[Environment], stale: dict[str, str]
) -> list[FlagRow]:
    """One row per flag with its state per environment and when it was last evaluated
    (three queries for the whole list)."""
    ids = [f.pk for f in flags]
    configs: dict[tuple[int, int], FlagEnvironment] = {
        (c.flag_id, c.environment_id): c for c in FlagEnvironment.objects.filter(flag_id__in=ids)
    }
    last = dict(
        FlagUsage.objects.filter(flag_id__in=ids)
        .values("flag_id")
        .annotate(last=Max("last_at"))
        .values_list("flag_id", "last")
    )
    return [
        FlagRow(
            flag=f,
            states=[EnvironmentState(e, configs.get((f.pk, e.pk))) for e in environments],
            last_evaluated=last.get(f.pk),
            stale=stale.get(f.key, ""),
        )
        for f in flags
    ]


def stale_reasons(project: Project) -> dict[str, str]:
    """Flag key -> why it looks stale (temporary flags serving one variation to everyone)."""
    return {s.flag.key: s.reason for s in stale_flags(project)}


@dataclass
class UsageRow:
    environment: Environment
    variation: str
    count: int
    last_at: datetime | None


@dataclass
class Usage:
    rows: list[UsageRow] = field(default_factory=list)
    last_evaluated: datetime | None = None
    days: int = USAGE_DAYS


def usage_of(flag: Flag, environments: list[Environment], days: int = USAGE_DAYS) -> Usage:
    """Evaluations per environment and variation over the last `days` days (today included)."""
    since = timezone.now().date() - timedelta(days=days - 1)
    by_id = {e.pk: e for e in environments}
    grouped = (
        FlagUsage.objects.filter(flag=flag, day__gte=since)
        .values("environment_id", "variation")
        .annotate(total=Sum("count"), last=Max("last_at"))
        .order_by("environment_id", "variation")
    )
    rows = [
        UsageRow(by_id[g["environment_id"]], g["variation"], g["total"], g["last"])
        for g in grouped
        if g["environment_id"] in by_id
    ]
    rows.sort(key=lambda r: (r.environment.position, r.environment.pk, r.variation))
    last = FlagUsage.objects.filter(flag=flag).aggregate(last=Max("last_at"))["last"]
    return Usage(rows=rows, last_evaluated=last, days=days)


@dataclass
class PreviewRow:
    environment: Environment
    result: FlagResult | None  # None: the flag is not served there (archived)

    @property
    def value_json(self) -> str:
        return "" if self.result is None else json.dumps(self.result.value, sort_keys=True)


def preview(flag: Flag, environments: list[Environment], attributes: dict) -> list[PreviewRow]:
    """What the unit gets in every environment, and why: the served specs of each
    environment through the same evaluation as /api/v1/evaluate and the SDKs."""
    rows = []
    for environment in environments:
        specs = environment_flags(environment).specs
        results = evaluate_flags(specs, attributes, [flag.key]) if flag.key in specs else {}
        rows.append(PreviewRow(environment, results.get(flag.key)))
    return rows


@dataclass
class ChangeRow:
    field: str
    before: str
    after: str


@dataclass
class RequestView:
    request: ChangeRequest
    changes: list[ChangeRow]


def _text(value: Any) -> str:
    if value is None:
        return "—"
    return (
        json.dumps(value, sort_keys=True, indent=1)
        if isinstance(value, list | dict)
        else (json.dumps(value))
    )


def change_request_views(
    project: Project, *, pending: bool = True, limit: int = 50
) -> list[RequestView]:
    """Change requests (pending ones, or the decided ones), each with the difference between
    the environment's current state and the requested change."""
    requests = ChangeRequest.objects.filter(project=project).select_related(
        "flag", "environment", "requested_by", "reviewed_by"
    )
    if pending:
        requests = requests.filter(status=ChangeRequestStatus.PENDING)
    else:
        requests = requests.exclude(status=ChangeRequestStatus.PENDING)
    requests = list(requests[:limit])
    configs = {
        (c.flag_id, c.environment_id): c
        for c in FlagEnvironment.objects.filter(flag_id__in={r.flag_id for r in requests})
    }
    views = []
    for r in requests:
        config = configs.get((r.flag_id, r.environment_id))
        changes = []
        for name, after in (r.change or {}).items():
            before = getattr(config, name, None) if config is not None else None
            changes.append(ChangeRow(name, _text(before), _text(after)))
        views.append(RequestView(r, changes))
    return views
