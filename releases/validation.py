"""What a release may be: its steps (canary or blue-green, with their limits and defaults),
its metrics, its variations, an environment where its rule can change something, and who may
release there. Each check raises a ``DomainError`` naming the field, or ``PermissionDenied``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import PermissionDenied

from core.errors import DomainError
from experiments.models import Environment, Metric, Project
from experiments.services.rules import is_number
from flags.models import Flag
from flags.services.access import is_admin, require

from .models import ReleaseKind, ReleaseMetricRole

MAX_STEPS = 20
MAX_METRICS = 20
MAX_STEP_MINUTES = 7 * 24 * 60
MAX_STEP_UNITS = 100_000_000
MAX_INTERVAL_SECONDS = 3600
DEFAULT_CANARY_STEPS = (
    {"percent": 1, "min_minutes": 10, "min_units": 200},
    {"percent": 5, "min_minutes": 10, "min_units": 200},
    {"percent": 25, "min_minutes": 15, "min_units": 500},
    {"percent": 50, "min_minutes": 15, "min_units": 1000},
    {"percent": 100, "min_minutes": 0, "min_units": 0},
)
DEFAULT_BLUE_GREEN_STEPS = ({"percent": 100, "min_minutes": 15, "min_units": 200},)


def check_steps(kind: str, steps: Any) -> list[dict[str, Any]]:
    if steps in (None, []):
        steps = DEFAULT_BLUE_GREEN_STEPS if kind == ReleaseKind.BLUE_GREEN else DEFAULT_CANARY_STEPS
    if not isinstance(steps, list | tuple) or len(steps) > MAX_STEPS:
        raise DomainError(f"Steps are a list of at most {MAX_STEPS} objects.", "steps")
    out, previous = [], 0.0
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(step, dict):
            raise DomainError('Each step is {"percent", "min_minutes", "min_units"}.', where)
        unknown = sorted(set(step) - {"percent", "min_minutes", "min_units"})
        if unknown:
            raise DomainError(f"A step has no field '{unknown[0]}'.", f"{where}.{unknown[0]}")
        percent = step.get("percent")
        if not is_number(percent) or not 0 < percent <= 100:
            raise DomainError("A step's percent is a number in (0, 100].", f"{where}.percent")
        if percent <= previous:
            raise DomainError(
                f"Steps must increase: step {i + 1} ({percent:g}%) is not above {previous:g}%.",
                f"{where}.percent",
            )
        minutes = step.get("min_minutes", 0)
        if not is_number(minutes) or not 0 <= minutes <= MAX_STEP_MINUTES:
            raise DomainError(
                f"min_minutes is from 0 to {MAX_STEP_MINUTES} (a week).", f"{where}.min_minutes"
            )
        units = step.get("min_units", 0)
        if not is_number(units) or units != int(units) or not 0 <= units <= MAX_STEP_UNITS:
            raise DomainError(
                "min_units is a whole number of units per side (0 or more).", f"{where}.min_units"
            )
        out.append(
            {"percent": float(percent), "min_minutes": float(minutes), "min_units": int(units)}
        )
        previous = float(percent)
    if kind == ReleaseKind.BLUE_GREEN and (len(out) != 1 or out[0]["percent"] != 100):
        raise DomainError(
            "A blue-green release is one step at 100% (the switch) whose minutes are the "
            "verification window.",
            "steps",
        )
    return out


def check_metrics(project: Project, metrics: Any) -> list[tuple[Metric, str, float | None]]:
    if metrics is None:
        return []
    if not isinstance(metrics, list | tuple) or len(metrics) > MAX_METRICS:
        raise DomainError(f"Metrics are a list of at most {MAX_METRICS} objects.", "metrics")
    seen, out = set(), []
    for i, item in enumerate(metrics):
        where = f"metrics[{i}]"
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            raise DomainError('Each metric is {"metric": key, "role", ...}.', where)
        key = item.get("metric")
        metric = (
            Metric.objects.filter(project=project, key=key).first()
            if isinstance(key, str)
            else None
        )
        if metric is None:
            raise DomainError(f"No metric {key!r} in this project's catalog.", f"{where}.metric")
        if key in seen:
            raise DomainError(f"Metric '{key}' is listed twice.", f"{where}.metric")
        seen.add(key)
        role = item.get("role", ReleaseMetricRole.GUARDRAIL)
        if role not in ReleaseMetricRole.values:
            raise DomainError(
                f"A release metric's role is {' or '.join(ReleaseMetricRole.values)}.",
                f"{where}.role",
            )
        margin = item.get("non_inferiority_margin")
        if margin is not None and (not is_number(margin) or not 0 <= margin <= 1):
            raise DomainError(
                "non_inferiority_margin is the tolerated harm relative to the baseline, from "
                "0 to 1 (0.02: up to 2% worse is tolerated).",
                f"{where}.non_inferiority_margin",
            )
        out.append((metric, role, None if margin is None else float(margin)))
    return out


def check_variations(flag: Flag, variation: Any, baseline: Any) -> None:
    keys = [v["key"] for v in flag.variations]
    if variation not in keys:
        raise DomainError(
            f"'{variation}' is not a variation of flag '{flag.key}' ({', '.join(keys)}).",
            "variation",
        )
    if baseline not in keys:
        raise DomainError(
            f"'{baseline}' is not a variation of flag '{flag.key}' ({', '.join(keys)}).",
            "baseline_variation",
        )
    if variation == baseline:
        raise DomainError("The new variation must differ from the baseline.", "variation")


def check_reachable(rules: Sequence[dict[str, Any]], environment: Environment) -> None:
    """The release's rule comes after the environment's rules: a force or rollout rule with no
    condition and no segment serves every unit first, and the release would change nothing."""
    for i, rule in enumerate(rules):
        if rule.get("type") in ("force", "rollout") and not (
            rule.get("condition") or rule.get("segment")
        ):
            raise DomainError(
                f"Rule {i + 1} ({rule.get('type')}, id {rule.get('id')}) serves every unit in "
                f"{environment.key} before a release's rule would: the release would change "
                "nothing. Remove that rule (or give it a condition or segment) first.",
                "environment",
            )


def check_may_release(project: Project, environment: Environment, actor: Any) -> None:
    require(project, actor, "edit")
    if environment.production and not is_admin(project, actor):
        raise PermissionDenied(f"Releases in {environment.key} need an admin of '{project.slug}'.")
