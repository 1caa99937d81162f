"""The lifecycle of a started experiment: start, pause, resume, ramp, conclude, rollback."""

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import DomainError
from experiments.layers import LAYER_LIVE_STATUSES
from experiments.models import RAMP_STAGE_DEFAULT_HOURS, Experiment, ExperimentStatus, MetricRole
from experiments.selectors import ramp_stage_due_at
from experiments.services.audit import audit_log_record
from experiments.services.rules import (
    RATIONALE_MAX,
    _check_spec,
    _check_variants,
    _stage_index_for,
    check_layer_free,
    is_number,
    layer_lock,
)


def _check_status(experiment: Experiment, action: str, allowed_from: Sequence[str]) -> None:
    if experiment.status not in allowed_from:
        allowed = " or ".join(ExperimentStatus(s).label.lower() for s in allowed_from)
        raise DomainError(
            f"Cannot {action} an experiment that is "
            f"{experiment.get_status_display().lower()} (only when {allowed}).",
            "status",
        )


def _transition(
    experiment: Experiment,
    *,
    allowed_from: Sequence[str],
    to: str,
    action: str,
    actor: AbstractBaseUser | None,
    extra: dict[str, Any] | None = None,
    note: dict[str, Any] | None = None,
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, action, allowed_from)
    before = {"status": experiment.status, "coverage": experiment.coverage}
    experiment.status = to
    for name, value in (extra or {}).items():
        setattr(experiment, name, value)
    experiment.save()
    after: dict[str, Any] = {"status": experiment.status, "coverage": experiment.coverage}
    if extra:
        after.update({k: v for k, v in extra.items() if k in ("decision_variant", "coverage")})
    after.update(note or {})
    audit_log_record(
        project=experiment.project,
        experiment=experiment,
        action=f"experiment.{action}",
        target=experiment.key,
        actor=actor,
        before=before,
        after=after,
    )
    return experiment


@transaction.atomic
def experiment_start(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    if experiment.layer:
        # Before the row lock, so every start in the layer waits in the same order.
        layer_lock(experiment.project, experiment.layer)
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, "start", [ExperimentStatus.DRAFT])
    # Another experiment may have started on an overlapping range since this one was saved.
    check_layer_free(experiment, LAYER_LIVE_STATUSES)
    variants = [
        {"key": v.key, "weight": v.weight, "is_control": v.is_control}
        for v in experiment.variants.all()
    ]
    _check_variants(variants)
    roles = set(experiment.experiment_metrics.values_list("role", flat=True))
    if not roles:
        raise DomainError("Add at least one metric before starting the experiment.", "metrics")
    if MetricRole.PRIMARY not in roles:
        raise DomainError(
            "Mark at least one metric as primary before starting: it decides whether to ship.",
            "metrics",
        )
    _check_spec(experiment)
    now = timezone.now()
    extra: dict[str, Any] = {"started_at": now, "phase_started_at": now}
    if experiment.ramp_stages:
        extra.update(
            coverage=float(experiment.ramp_stages[0]["coverage"]),
            ramp_stage_index=0,
            ramp_stage_started_at=now,
        )
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.DRAFT],
        to=ExperimentStatus.RUNNING,
        action="start",
        actor=actor,
        extra=extra,
    )


@transaction.atomic
def experiment_pause(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING],
        to=ExperimentStatus.PAUSED,
        action="pause",
        actor=actor,
    )


@transaction.atomic
def experiment_resume(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.PAUSED],
        to=ExperimentStatus.RUNNING,
        action="resume",
        actor=actor,
    )


@transaction.atomic
def experiment_ramp(
    *, experiment: Experiment, coverage: float, actor: AbstractBaseUser | None = None
) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    _check_status(experiment, "ramp", [ExperimentStatus.RUNNING, ExperimentStatus.PAUSED])
    if not is_number(coverage) or not 0 < coverage <= 1:
        raise DomainError("Coverage must be a number in (0, 1] (0.5 = 50% of units).", "coverage")
    if coverage < experiment.coverage - 1e-12:
        raise DomainError(
            f"Coverage may only go up while live (now {experiment.coverage:g}); "
            "roll back to stop the experiment instead.",
            "coverage",
        )
    if abs(coverage - experiment.coverage) <= 1e-12:
        raise DomainError(
            f"Coverage is already {experiment.coverage:g}; choose a higher value.", "coverage"
        )
    extra: dict[str, Any] = {"coverage": float(coverage)}
    stages = experiment.ramp_stages or []
    if stages:
        due = ramp_stage_due_at(experiment)
        now = timezone.now()
        if due is not None and now < due:
            index = min(experiment.ramp_stage_index, len(stages) - 1)
            hours = float(stages[index].get("min_hours", RAMP_STAGE_DEFAULT_HOURS))
            raise DomainError(
                f"Ramp stage {index + 1} ({float(stages[index]['coverage']):.0%}) must run for "
                f"at least {hours:g} h before coverage goes up; it can advance after "
                f"{due:%Y-%m-%d %H:%M} UTC. Edit the ramp plan to change its duration.",
                "coverage",
            )
        index = _stage_index_for(stages, coverage)
        if index != experiment.ramp_stage_index or coverage > float(stages[-1]["coverage"]):
            extra.update(ramp_stage_index=index, ramp_stage_started_at=now)
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=experiment.status,
        action="ramp",
        actor=actor,
        extra=extra,
    )


def _latest_recommendation(experiment: Experiment) -> tuple[str, str] | None:
    """(recommendation, ship_variant) of the experiment's latest stored snapshot, or None.

    Reads analysis's snapshot table through the reverse relation, without importing the
    analysis app (which sits above this layer)."""
    return (
        experiment.snapshots.order_by("-computed_at", "-id")
        .values_list("recommendation", "ship_variant")
        .first()
    )


def _against(recommendation: tuple[str, str] | None, decision: str, control: str) -> str:
    """Why ``decision`` goes against the recommendation, in words; "" when it does not.

    keep (ship X) is followed only by deciding X (the control's key when nothing is to ship);
    extend and rollback are followed by keeping the control (ending without a winner)."""
    if recommendation is None:
        return ""
    kind, ship = recommendation
    if kind == "keep":
        expected = ship or control
        if decision != expected:
            what = "keep the control" if expected == control else f"ship {expected}"
            return f"the latest analysis recommends keep ({what})"
        return ""
    if kind in ("extend", "rollback") and decision != control:
        return (
            f"the latest analysis recommends {'extending' if kind == 'extend' else 'rolling back'}"
        )
    return ""


@transaction.atomic
def experiment_conclude(
    *,
    experiment: Experiment,
    decision: str,
    rationale: str = "",
    actor: AbstractBaseUser | None = None,
) -> Experiment:
    """Record the decision. Against the latest snapshot's recommendation (shipping a variant
    when it recommends extend or rollback, or anything but its keep) the ``rationale`` is
    required: the library of concluded experiments shows why."""
    variants = list(experiment.variants.values_list("key", "is_control"))
    keys = [k for k, _ in variants]
    control = next((k for k, c in variants if c), keys[0] if keys else "control")
    if decision not in keys:
        raise DomainError(
            f"Decision must be one of the variant keys: {', '.join(keys)} "
            f"(choose '{control}' to keep the control).",
            "decision",
        )
    if not isinstance(rationale, str):
        raise DomainError("The rationale is text.", "rationale")
    rationale = rationale.strip()
    if len(rationale) > RATIONALE_MAX:
        raise DomainError(
            f"The rationale is at most {RATIONALE_MAX} characters ({len(rationale)} given).",
            "rationale",
        )
    recommendation = _latest_recommendation(experiment)
    against = _against(recommendation, decision, control)
    if against and not rationale:
        raise DomainError(
            f"This decision goes against the recommendation: {against}. Say why in the "
            "rationale; it is kept with the experiment and shown in the library.",
            "rationale",
        )
    is_control = dict(variants)[decision]
    note: dict[str, Any] = {"decision": "keep control" if is_control else f"ship {decision}"}
    if recommendation is not None:
        note["recommendation"] = recommendation[0]
    if against:
        note["against_recommendation"] = True
    if rationale:
        note["rationale"] = rationale
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.CONCLUDED,
        action="conclude",
        actor=actor,
        extra={"decision_variant": decision, "ended_at": timezone.now(), "rationale": rationale},
        note=note,
    )


@transaction.atomic
def experiment_rollback(
    *, experiment: Experiment, actor: AbstractBaseUser | None = None, reason: str = ""
) -> Experiment:
    return _transition(
        experiment,
        allowed_from=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        to=ExperimentStatus.ROLLED_BACK,
        action="rollback",
        actor=actor,
        extra={"ended_at": timezone.now()},
        note={"reason": reason} if reason else None,
    )
