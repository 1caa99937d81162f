"""Ranges and validation rules of a definition, shared by the definition, metric and
lifecycle services; each refusal is a DomainError naming the field to fix."""

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection

from bucketing.conditions import validate_condition
from core.errors import DomainError
from experiments.layers import LAYER_HOLDING_STATUSES, LAYER_TOLERANCE
from experiments.models import (
    RAMP_STAGE_DEFAULT_HOURS,
    Experiment,
    ExperimentStatus,
    Membership,
    Metric,
    MetricRole,
    Project,
    Segment,
)
from experiments.selectors import experiment_spec

WEIGHT_TOLERANCE = 1e-6
# Ranges of the numeric settings that are not fractions in [0, 1] (docs/user-guide.md "Ranges
# of the settings"). Beyond them the analysis breaks (timestamp arithmetic overflows) or the
# value is a typo: every service, serializer and form enforces them.
MAX_CONVERSION_WINDOW_HOURS = 8760  # one year, for the window and the pre-exposure window
MAX_PLANNED_SAMPLE_SIZE = 1_000_000_000
MAX_MDE = 10.0  # a relative lift of +1000%
MAX_RAMP_STAGE_HOURS = 8760
# The experiment's alpha and a metric's non-inferiority margin: the service's rule, and the
# bounds the form and the serializer show on their fields.
ALPHA_MIN, ALPHA_MAX = 0.0001, 0.49
MARGIN_MAX = 0.99
# Fields of a live (started) experiment that would spoil its statistics if they changed: the
# bucketing (seed, hash attribute, layer slice) and the pre-registered design (alpha, planned
# sample, MDE, decision policy).
FROZEN_WHEN_LIVE = (
    "seed",
    "hash_attribute",
    "layer",
    "layer_start",
    "layer_end",
    "alpha",
    "planned_sample_size",
    "mde",
    "decision_policy",
)
FINISHED = (ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK)
# Tags of an experiment: as many and as long as a flag's (flags/services/rules.py).
MAX_TAGS = 20
TAG_MAX = 50
# A decision's rationale (docs/user-guide.md "Decisions on record").
RATIONALE_MAX = 5000


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-12)
    return a == b


def is_number(x: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_variants(variants: Sequence[dict[str, Any]]) -> None:
    """The variant list: at least two, keyed uniquely, one control, weights summing to 1."""
    if len(variants) < 2:
        raise DomainError(
            "An experiment needs at least two variants: a control and a treatment.", "variants"
        )
    keys = [v.get("key") or "" for v in variants]
    if any(not k for k in keys):
        raise DomainError("Every variant needs a key (e.g. control, treatment).", "variants")
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise DomainError(
            f"Variant keys must be unique ({', '.join(duplicates)} appears more than once).",
            "variants",
        )
    controls = sum(1 for v in variants if v.get("is_control"))
    if controls != 1:
        raise DomainError(
            f"Exactly one variant must be the control (found {controls}).", "variants"
        )
    for v in variants:
        weight = v.get("weight")
        if not is_number(weight) or not 0 <= weight <= 1:
            raise DomainError(
                f"The weight of variant '{v['key']}' must be a number between 0 and 1.",
                "variants",
            )
    total = sum(float(v["weight"]) for v in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise DomainError(
            f"Weights must sum to 1; they sum to {total:g}. "
            "For an even split of two variants use 0.5 and 0.5.",
            "variants",
        )


def check_metric_entries(metrics: Sequence[dict[str, Any]]) -> None:
    """The metric list on its own (no catalog look-up): keys, no repeats, roles, margins."""
    seen = set()
    for i, item in enumerate(metrics):
        key = item.get("metric")
        if not key:
            raise DomainError(f"Metric {i + 1} needs its metric key.", "metrics")
        if key in seen:
            raise DomainError(f"Metric '{key}' is listed twice.", "metrics")
        seen.add(key)
        _metric_role_and_margin(item)


def _metric_role_and_margin(item: dict[str, Any]) -> tuple[str, float | None]:
    key = item["metric"]
    role = item.get("role") or MetricRole.PRIMARY
    if role not in MetricRole.values:
        raise DomainError(
            f"Unknown metric role '{role}'; use {', '.join(MetricRole.values)}.", "metrics"
        )
    margin = item.get("non_inferiority_margin")
    if role == MetricRole.GUARDRAIL and margin is None:
        margin = 0.0
    if margin is not None and (not is_number(margin) or not 0 <= float(margin) <= MARGIN_MAX):
        raise DomainError(
            f"Non-inferiority margin of '{key}' must be a relative lift from 0 to {MARGIN_MAX:g} "
            "(0.02 tolerates a 2% change in the harmful direction).",
            "metrics",
        )
    return role, None if margin is None else float(margin)


def _check_metrics(project: Project, metrics: Sequence[dict[str, Any]]) -> list[tuple]:
    check_metric_entries(metrics)
    resolved = []
    for item in metrics:
        key = item["metric"]
        metric = Metric.objects.filter(project=project, key=key).first()
        if metric is None:
            raise DomainError(
                f"Unknown metric '{key}' in this project; add it to the metric catalog first.",
                "metrics",
            )
        if metric.kind == "quantile":
            raise DomainError(
                f"Metric '{key}' is a quantile metric: those judge guarded releases; an "
                "experiment's metrics are conversions, counts, means or ratios.",
                "metrics",
            )
        resolved.append((metric, *_metric_role_and_margin(item)))
    return resolved


def check_ramp(stages: Sequence[dict[str, Any]]) -> None:
    """The ramp plan: coverages in (0, 1] that increase stage by stage, hours and units."""
    previous = 0.0
    for i, stage in enumerate(stages):
        coverage = stage.get("coverage")
        hours = stage.get("min_hours", RAMP_STAGE_DEFAULT_HOURS)
        if not is_number(coverage) or not 0 < coverage <= 1:
            raise DomainError(
                f"Ramp stage {i + 1}: coverage must be in (0, 1] (0.05 = 5% of units).",
                "ramp_stages",
            )
        if coverage <= previous:
            raise DomainError(
                f"Ramp stages must increase coverage (stage {i + 1} is {coverage:g}, "
                f"after {previous:g}).",
                "ramp_stages",
            )
        if not is_number(hours) or not 0 <= hours <= MAX_RAMP_STAGE_HOURS:
            raise DomainError(
                f"Ramp stage {i + 1}: min_hours must be from 0 to {MAX_RAMP_STAGE_HOURS} "
                "(one year).",
                "ramp_stages",
            )
        units = stage.get("min_units")
        if units is not None and not (isinstance(units, int) and 1 <= units <= 10**9):
            raise DomainError(
                f"Ramp stage {i + 1}: min_units must be a whole number of units per arm from 1 "
                "to 1,000,000,000.",
                "ramp_stages",
            )
        previous = coverage


def check_targeting(targeting: Any) -> None:
    problems = validate_condition(targeting)
    if problems:
        raise DomainError("Targeting: " + " ".join(problems), "targeting")


def resolve_segment(project: Project, segment: Any) -> Segment | None:
    """The saved segment an experiment targets, given by its key ("" or None: no segment)."""
    if isinstance(segment, Segment):
        segment = segment.key  # looked up again: it must belong to this project
    if segment in (None, ""):
        return None
    found = None
    if isinstance(segment, str):
        # Locked until the experiment is saved: a concurrent segment_delete either waits and
        # then sees this experiment among the segment's users, or has already deleted it.
        found = Segment.objects.select_for_update().filter(project=project, key=segment).first()
    if found is None:
        raise DomainError(
            f"Unknown segment '{segment}' in this project; create it on the segments page "
            "first, or choose none.",
            "segment",
        )
    return found


def check_tags(tags: Any) -> list[str]:
    """A list of at most MAX_TAGS non-empty texts of at most TAG_MAX characters; returns them
    stripped, without repeats, in their order."""
    if tags is None:
        return []
    if not isinstance(tags, list | tuple) or len(tags) > MAX_TAGS:
        raise DomainError(f"Tags are a list of at most {MAX_TAGS} short words.", "tags")
    result: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or len(tag.strip()) > TAG_MAX:
            raise DomainError(
                f"Each tag is a non-empty text of at most {TAG_MAX} characters.", "tags"
            )
        if tag.strip() not in result:
            result.append(tag.strip())
    return result


def check_layer(start: Any, end: Any) -> None:
    if not (is_number(start) and is_number(end) and 0 <= start < end <= 1):
        raise DomainError(
            "The layer range must satisfy 0 <= start < end <= 1 "
            "(e.g. 0 to 0.5 for the first half of the layer).",
            "layer",
        )


# The names the services used before the checks were shared with the forms and the API.
_check_variants = check_variants
_check_ramp = check_ramp


def _check_definition(experiment: Experiment) -> None:
    """Rules on the experiment row itself, phrased for the person who has to fix them."""
    if not is_number(experiment.coverage) or not 0 <= experiment.coverage <= 1:
        raise DomainError("Coverage must be between 0 and 1 (0.2 = 20% of units).", "coverage")
    if not is_number(experiment.alpha) or not ALPHA_MIN <= experiment.alpha <= ALPHA_MAX:
        raise DomainError(
            f"Alpha must be from {ALPHA_MIN:g} to {ALPHA_MAX:g} (0.05 is usual).", "alpha"
        )
    if not (experiment.hash_attribute or "").strip():
        raise DomainError(
            "Choose the attribute that identifies a unit (e.g. id, user_id, device_id).",
            "hash_attribute",
        )
    if not (experiment.seed or "").strip():
        raise DomainError("The seed must not be empty.", "seed")
    if experiment.targeting is None:
        experiment.targeting = {}
    check_targeting(experiment.targeting)
    check_layer(experiment.layer_start, experiment.layer_end)
    experiment.tags = check_tags(experiment.tags)
    planned = experiment.planned_sample_size
    if planned is not None and (
        not is_number(planned)
        or planned != int(planned)
        or not 2 <= planned <= MAX_PLANNED_SAMPLE_SIZE
    ):
        raise DomainError(
            "The planned sample size counts units over all variants: a whole number from 2 to "
            f"{MAX_PLANNED_SAMPLE_SIZE:,}.",
            "planned_sample_size",
        )
    if experiment.mde is not None and (
        not is_number(experiment.mde) or not 0 < experiment.mde <= MAX_MDE
    ):
        raise DomainError(
            f"The MDE must be a relative lift above 0 and at most {MAX_MDE:g} "
            "(0.05 = +5%; 10 = +1000%).",
            "mde",
        )
    if experiment.ramp_stages:
        check_ramp(experiment.ramp_stages)
    experiment.full_clean(exclude=["owner"])


def _check_spec(experiment: Experiment) -> None:
    """The definition must stay servable: assignment builds this spec for every request."""
    try:
        experiment_spec(experiment, list(experiment.variants.all()))
    except ValueError as exc:
        raise DomainError(f"This definition cannot be served: {exc}.", "variants") from exc


def _check_owner(project: Project, owner: AbstractBaseUser | None) -> None:
    if owner is None or owner.is_superuser:
        return
    if not Membership.objects.filter(project=project, user=owner).exists():
        raise DomainError(
            f"The owner must be a member of this project ({owner.get_username()} is not).",
            "owner",
        )


def _stage_index_for(stages: Sequence[dict[str, Any]], coverage: float) -> int:
    """The last ramp stage whose coverage has been reached (0 before the first)."""
    index = 0
    for i, stage in enumerate(stages):
        if coverage >= float(stage["coverage"]) - 1e-12:
            index = i
    return index


def layer_lock(project: Project, layer: str) -> None:
    """Serialize the checks of one layer until the transaction ends.

    PostgreSQL: a transaction-level advisory lock on (project, layer), so two concurrent saves
    or starts in one layer run their check one after the other (the second sees the first's
    commit). The one-bigint key space is separate from analysis.locks' two-int keys. SQLite
    needs nothing: every transaction begins IMMEDIATE (config/settings.py), taking the
    database's write lock, so two saves or starts already run one after the other.
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"abacus-layer:{project.pk}:{layer}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def check_layer_free(
    experiment: Experiment, statuses: Sequence[str] = LAYER_HOLDING_STATUSES
) -> None:
    """Refuse a layer range that overlaps another experiment of the project's same layer in one
    of ``statuses`` (at save: every status that holds a range; at start: the live ones, since
    a draft serves nobody and the first to start wins). Call inside the transaction, after
    layer_lock."""
    if not experiment.layer:
        return
    others = (
        Experiment.objects.filter(
            project_id=experiment.project_id,
            layer=experiment.layer,
            status__in=list(statuses),
            layer_start__lt=experiment.layer_end - LAYER_TOLERANCE,
            layer_end__gt=experiment.layer_start + LAYER_TOLERANCE,
        )
        .exclude(pk=experiment.pk)
        .order_by("layer_start", "key")
    )
    other = others.first()
    if other is not None:
        raise DomainError(
            f"The range {experiment.layer_start:g}-{experiment.layer_end:g} of layer "
            f"'{experiment.layer}' overlaps experiment '{other.key}' "
            f"({other.get_status_display().lower()}, {other.layer_start:g}-{other.layer_end:g}); "
            "experiments of one layer must not share units. Choose a free range (see the "
            "layer page) or conclude that experiment.",
            "layer_start",
        )
