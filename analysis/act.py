"""Act on a live snapshot: auto-rollback (opt-in) or the ramp plan at counted looks, alerts on
what changed since the previous snapshot, and for each a signed webhook (analysis.webhooks)
and a notification to the project's channels and people (notifications.services.notify)."""

import logging
from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone

from analysis.models import ResultSnapshot
from analysis.policy import Evaluation
from analysis.ramps import ramp_step
from analysis.recommendations import harm_reason
from analysis.webhooks import webhook_enqueue
from experiments.models import Experiment, ExperimentStatus
from experiments.services import experiment_rollback
from notifications.services import notify as notification_send

logger = logging.getLogger("analysis.services")  # the logger these records always went to

WEBHOOK_EVENTS = {
    "rollback": "experiment.rolled_back",
    "ramp": "experiment.ramped",
    "recommendation": "experiment.recommendation_changed",
    "srm": "experiment.srm_detected",
}

# What a person reads in Slack or an email subject, per action (the reason follows).
NOTIFICATION_TITLES = {
    "rollback": "Experiment {name} was rolled back",
    "ramp": "Experiment {name} ramped to {coverage}",
    "recommendation": "Experiment {name}: the recommendation is now {recommendation}",
    "srm": "Experiment {name}: sample-ratio mismatch",
}


def act(
    experiment: Experiment, snapshot: ResultSnapshot, evaluation: Evaluation
) -> list[dict[str, Any]]:
    """Auto-rollback (opt-in) on harm or ill health; otherwise the ramp plan. Runs inside the
    snapshot's transaction, only at counted looks; the webhook goes out after it commits."""
    experiment.refresh_from_db()
    if experiment.status != ExperimentStatus.RUNNING:
        return []
    decision = evaluation.decision
    assert decision is not None
    now = timezone.now()
    if decision.action == "rollback" and decision.harm and experiment.auto_rollback:
        reason = " ".join(decision.reasons)
        experiment_rollback(experiment=experiment, reason=reason)
        detail = {"trigger": "auto_rollback"}
        return [notify(experiment, snapshot, "rollback", reason, now, detail)]
    harms = [
        c.outcome
        for c in evaluation.comparisons
        if c.metric.role == "guardrail" and c.outcome.harmed
    ]
    outcome = ramp_step(
        experiment=experiment,
        guardrail_harms=[harm_reason(o) for o in harms],
        unhealthy=evaluation.unhealthy,
        units=snapshot.health.get("units_by_variant", {}),
        now=now,
    )
    if outcome is None:
        return []
    return [notify(experiment, snapshot, outcome.action, outcome.reason, now, outcome.detail)]


def alert(experiment: Experiment, snapshot: ResultSnapshot) -> None:
    """Webhooks for what changed since the phase's previous snapshot (live runs only): the
    recommendation (before the first snapshot it counts as "extend": keep collecting), and a
    sample-ratio mismatch that the previous snapshot did not flag."""
    previous = (
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=snapshot.phase, data_through__lt=snapshot.data_through
        )
        .exclude(pk=snapshot.pk)
        .order_by("-data_through", "-id")
        .only("recommendation", "health")
        .first()
    )
    now = timezone.now()
    before = previous.recommendation if previous else "extend"
    if snapshot.recommendation != before:
        reason = f"The recommendation changed from {before} to {snapshot.recommendation}."
        detail = {"previous_recommendation": before}
        notify(experiment, snapshot, "recommendation", reason, now, detail)
    health = snapshot.health or {}
    if health.get("srm_flagged") and not (previous and (previous.health or {}).get("srm_flagged")):
        units = health.get("units_by_variant", {})
        reason = (
            f"Sample-ratio mismatch (p = {health.get('srm_p_value')}): the units per variant "
            f"{units} do not match the weights; the results cannot be trusted until it is fixed."
        )
        detail = {"srm_p_value": health.get("srm_p_value"), "units_by_variant": units}
        notify(experiment, snapshot, "srm", reason, now, detail)


def notify(
    experiment: Experiment,
    snapshot: ResultSnapshot,
    action: str,
    reason: str,
    at: datetime,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """Log the action, send its webhook when it has an event, and return the record the
    snapshot keeps in ``actions``."""
    record = {"action": action, "at": at.isoformat(), "reason": reason, **detail}
    event = WEBHOOK_EVENTS.get(action)
    if event:
        experiment.refresh_from_db()
        delivery = webhook_enqueue(
            project=experiment.project,
            event=event,
            experiment=experiment,
            snapshot=snapshot,
            payload={
                "experiment": experiment.key,
                "experiment_name": experiment.name,
                "status": experiment.status,
                "coverage": experiment.coverage,
                "at": at.isoformat(),
                "reason": reason,
                "recommendation": snapshot.recommendation,
                "reasons": snapshot.reasons,
                "snapshot_id": snapshot.pk,
                "data_through": snapshot.data_through.isoformat(),
                **detail,
            },
        )
        record["webhook_delivery"] = delivery.pk if delivery else None
        record["notifications"] = notification_send(
            project=experiment.project,
            event=event,
            title=NOTIFICATION_TITLES[action].format(
                name=experiment.name,
                coverage=f"{experiment.coverage * 100:.4g}%",
                recommendation=snapshot.recommendation,
            ),
            text=reason,
            link=reverse(
                "experiment-results",
                kwargs={"project": experiment.project.slug, "key": experiment.key},
            ),
            data={"experiment": experiment.key, "snapshot_id": snapshot.pk, **detail},
        )
    logger.info("experiment %s: %s (%s)", experiment.key, action, reason)
    return record
