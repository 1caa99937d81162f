"""The release monitor: the beat's tick (start due releases, pick due analyses) and one
analysis of a release's current step -> ``ReleaseCheck`` -> advance, hold, roll back or complete
(releases/policy.py decides; releases/services.py moves).

Each release runs on its own cadence (``analysis_interval_seconds``, down to
``ABACUS_RELEASE_MIN_INTERVAL_SECONDS``), separately from the experiments' schedule, and reads
only its current step's window, so a harmful canary is rolled back within one cadence of the
evidence.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from experiments.filters import clean_filters
from flags.services.environments import config_get

from . import aggregation as agg
from .models import Release, ReleaseCheck, ReleaseMetric, ReleaseStatus
from .notify import release_notify
from .policy import ADVANCE, COMPLETE, HOLD, ROLLBACK, MetricSpec, Plan, Step, StepData, decide
from .services import (
    MONITOR,
    transition_advance,
    transition_complete,
    transition_fail,
    transition_rollback,
    transition_start,
)

logger = logging.getLogger(__name__)


def plan_for(release: Release, metrics: list[ReleaseMetric]) -> Plan:
    steps = tuple(Step(s["percent"], s["min_minutes"], s["min_units"]) for s in release.steps)
    specs = tuple(
        MetricSpec(
            key=rm.metric.key,
            kind=rm.metric.kind,
            role=rm.role,
            direction=rm.metric.direction,
            margin=rm.non_inferiority_margin,
            quantile=rm.metric.quantile,
            name=rm.metric.name,
        )  # fmt: skip
        for rm in metrics
    )
    return Plan(release.alpha, steps, specs)


def _sources(metrics: list[ReleaseMetric]) -> list[agg.MetricSource]:
    return [
        agg.MetricSource(
            MetricSpec(rm.metric.key, rm.metric.kind, quantile=rm.metric.quantile),
            rm.metric.event_name,
            rm.metric.denominator_event,
            tuple(clean_filters(rm.metric.filters)),
            rm.metric.value_property,
        )
        for rm in metrics
    ]


def step_data(release: Release, metrics: list[ReleaseMetric], through: datetime) -> StepData:
    """The current step's sides and metric statistics at ``through``."""
    step = release.steps[release.step]
    start = release.step_started_at or release.started_at or through
    base, new = release.baseline_variation, release.variation
    ids = {"project_id": release.project_id, "environment_id": release.environment_id,
           "flag_id": release.flag_id}  # fmt: skip
    historical = step["percent"] >= 100
    if historical:
        # No concurrent baseline: the baseline's units in the window of equal length before.
        sides = [([base], start - (through - start), start), ([new], start, through)]
    else:
        sides = [([base, new], start, through)]
    counts: dict[str, int] = {"excluded": 0}
    sums: dict[str, dict] = {}
    quantile_values: dict[str, dict[str, tuple]] = {}
    sources = _sources(metrics)
    means = [s for s in sources if s.spec.kind != "quantile"]
    for variations, lo, hi in sides:
        window = {"environment_id": ids["environment_id"], "flag_id": ids["flag_id"],
                  "variations": variations, "start": lo, "end": hi}  # fmt: skip
        c = agg.window_counts(**window)
        agg.statistics_refresh(sum(c.values()))
        counts["excluded"] += c.pop("excluded")
        counts.update(c)
        if means:
            sums.update(agg.mean_stats(project_id=ids["project_id"], sources=means, **window))
        for src in sources:
            if src.spec.kind == "quantile":
                values = agg.quantile_values(
                    project_id=ids["project_id"],
                    event_name=src.event_name,
                    filters=src.filters,
                    value_property=src.value_property,
                    **window,
                )
                quantile_values.setdefault(src.spec.key, {}).update(values)
    per_metric: dict[str, Any] = {}
    for src in sources:
        if src.spec.kind == "quantile":
            per_metric[src.spec.key] = agg.quantile_arms(
                quantile_values.get(src.spec.key, {}), base, new, src.spec.quantile or 0.5
            )
        else:
            per_metric[src.spec.key] = agg.mean_arms(sums, base, new, src.spec.key)
    elapsed = (through - start).total_seconds() / 60.0
    return StepData(
        elapsed_minutes=elapsed, units_baseline=counts.get(base, 0),
        units_new=counts.get(new, 0), excluded=counts["excluded"], metrics=per_metric,
        historical=historical,
    )  # fmt: skip


def _rule_intact(release: Release) -> str | None:
    """Why the release cannot go on, or None: its rule must still be served as it left it."""
    if release.flag.archived:
        return f"Flag '{release.flag.key}' was archived during the release."
    config = config_get(release.flag, release.environment)
    if not config.enabled:
        return (
            f"Flag '{release.flag.key}' was turned off in {release.environment.key} (the kill "
            "switch) during the release: the release stops and leaves the flag off."
        )
    rule = next((r for r in config.rules if r.get("id") == release.rule_id), None)
    if rule is None:
        return f"The release's rule ({release.rule_id}) was removed from the flag by hand."
    share = rule.get("weights", {}).get(release.variation, 0.0)
    expected = release.steps[release.step]["percent"] / 100.0
    if abs(share - expected) > 1e-9:
        return (
            f"The release's rule was edited by hand ({share:.2%} instead of {expected:.2%}): "
            "the release stops; start a new one."
        )
    return None


def _record_check(
    release: Release, data: StepData, decision: Any, through: datetime, ms: float
) -> ReleaseCheck:
    return ReleaseCheck.objects.create(
        release=release, step=release.step, percent=release.steps[release.step]["percent"],
        at=through,
        units={"baseline": data.units_baseline, "new": data.units_new, "excluded": data.excluded,
               "historical": data.historical},
        metrics=[c.as_dict() for c in decision.metrics], action=decision.action,
        reasons=list(decision.reasons), waits_for=list(decision.waits_for), elapsed_ms=ms,
    )  # fmt: skip


def _held_notice(release: Release, decision: Any, previous: dict, data: StepData) -> None:
    """One "held" notice per step: when the step has run past its minimum time and still waits,
    or at a sample-ratio mismatch."""
    if decision.action != HOLD or release.status != ReleaseStatus.RUNNING:
        return
    step = release.steps[release.step]
    overdue = data.elapsed_minutes >= max(step["min_minutes"], 1.0)
    srm = decision.srm_p_value is not None and any("mismatch" in r for r in decision.reasons)
    if (overdue or srm) and previous.get("held_notified_step") != release.step:
        release.decision["held_notified_step"] = release.step
        text = " ".join(decision.reasons)
        if decision.waits_for:
            text += " Waiting for: " + "; ".join(decision.waits_for) + "."
        release_notify(release, "release.held", text)
    elif previous.get("held_notified_step") == release.step:
        release.decision["held_notified_step"] = release.step


def release_analyze(
    release_id: int, through: datetime | None = None, now: datetime | None = None
) -> ReleaseCheck | None:
    """Analyse the release's current step and act. None when it is not live or another worker
    holds it. ``now`` (the moves' time) and ``through`` (the data's cut-off) default to the
    clock; tests and the simulation pass their own."""
    with transaction.atomic():
        release = (
            Release.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("project", "flag", "environment")
            .filter(pk=release_id, status__in=[ReleaseStatus.RUNNING, ReleaseStatus.PAUSED])
            .first()
        )
        if release is None:
            return None
        now = now or timezone.now()
        through = through or now
        broken = _rule_intact(release)
        if broken:
            transition_fail(release, broken)
            return None
        metrics = list(ReleaseMetric.objects.filter(release=release).select_related("metric"))
        started = time.perf_counter()
        data = step_data(release, metrics, through)
        decision = decide(
            plan_for(release, metrics), release.step, data,
            paused=release.status == ReleaseStatus.PAUSED,
        )  # fmt: skip
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        check = _record_check(release, data, decision, through, elapsed_ms)
        previous = release.decision or {}
        release.decision = {
            "action": decision.action, "reasons": list(decision.reasons),
            "waits_for": list(decision.waits_for), "at": through.isoformat(), "check": check.pk,
        }  # fmt: skip
        # The tick that queued this analysis already set the next one a cadence after it was
        # due; re-counting from this run's later clock would make every next tick miss it by the
        # queueing delay (a cadence of interval + one tick). Only an unscheduled run sets it.
        if release.next_analysis_at is None or release.next_analysis_at <= now:
            release.next_analysis_at = now + timedelta(seconds=release.analysis_interval_seconds)
        _held_notice(release, decision, previous, data)
        release.save(update_fields=["decision", "next_analysis_at"])
        reason = " ".join(decision.reasons)
        if decision.action == ROLLBACK:
            if release.auto_rollback:
                transition_rollback(release, None, MONITOR, reason, now)
            elif previous.get("action") != ROLLBACK:
                release_notify(
                    release, "release.held",
                    "Harm detected; auto_rollback is off, so the release holds for a person to "
                    f"roll it back. {reason}",
                )  # fmt: skip
        elif decision.action == ADVANCE and release.status == ReleaseStatus.RUNNING:
            transition_advance(release, None, MONITOR, reason, now)
        elif decision.action == COMPLETE and release.status == ReleaseStatus.RUNNING:
            transition_complete(release, None, MONITOR, reason, now)
        logger.info(
            "release %s step %s: %s (%s)", release.pk, release.step, decision.action, reason
        )
        return check


def releases_tick(now: datetime | None = None) -> list[int]:
    """Start the scheduled releases that are due; return the live releases whose analysis is
    due, pushing their next time one cadence ahead so a slow worker does not queue them twice."""
    now = now or timezone.now()
    due: list[int] = []
    with transaction.atomic():
        scheduled = (
            Release.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("project", "flag", "environment")
            .filter(status=ReleaseStatus.SCHEDULED, start_at__lte=now)
        )
        for release in scheduled:
            transition_start(release, None, MONITOR, now)
        live = Release.objects.select_for_update(skip_locked=True).filter(
            Q(next_analysis_at__lte=now) | Q(next_analysis_at__isnull=True),
            status__in=[ReleaseStatus.RUNNING, ReleaseStatus.PAUSED],
        )
        for release in live.only("id", "analysis_interval_seconds", "next_analysis_at"):
            due.append(release.pk)
            # One cadence after it was due, not after this tick: ticks land late by varying
            # amounts, and counting from each one's clock lets the next fall short of the time
            # by that jitter, a whole tick added to the cadence. Overdue: from now.
            interval = timedelta(seconds=release.analysis_interval_seconds)
            after = release.next_analysis_at and release.next_analysis_at + interval
            release.next_analysis_at = after if after and after > now else now + interval
            release.save(update_fields=["next_analysis_at"])
    return due
