"""Progressive delivery: after each live snapshot, advance a ramp plan or roll it back.

A ramp plan (``Experiment.ramp_stages``, e.g. 1% -> 5% -> 20% -> 50% coverage with a minimum
duration per stage) is an opt-in to automation on guardrails: coverage moves to the next stage
once the current one has run its ``min_hours`` and the snapshot shows no guardrail harm and no
ill health; any guardrail harm rolls the experiment back at once (with or without
``auto_rollback``). The moves go through experiments.services (experiment_ramp and
experiment_rollback), which enforce the state rules and write the audit log.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from experiments.models import Experiment, ExperimentStatus
from experiments.selectors import ramp_status
from experiments.services import experiment_ramp, experiment_rollback


@dataclass(frozen=True)
class RampOutcome:
    action: str  # ramp | rollback | hold
    reason: str
    detail: dict[str, Any]


def ramp_step(
    *,
    experiment: Experiment,
    guardrail_harms: list[str],
    unhealthy: list[str],
    units: dict[str, int],
    now: datetime,
) -> RampOutcome | None:
    """Act on the ramp plan after a look; None when there is nothing to do. A stage advances
    only after its minimum duration and its minimum sample in every arm (never with no
    exposures: "no harm" is vacuously true without data)."""
    if not experiment.ramp_stages or experiment.status != ExperimentStatus.RUNNING:
        return None
    if guardrail_harms:
        reason = "Ramp plan stopped on guardrail harm: " + " ".join(guardrail_harms)
        experiment_rollback(experiment=experiment, reason=reason)
        return RampOutcome("rollback", reason, {"coverage": experiment.coverage})
    status = ramp_status(experiment, now, units)
    if status is None or status.next_coverage is None or not status.ready:
        return None
    stage = min(status.current_index + 1, len(status.stages) - 1)
    if unhealthy:
        reason = (
            f"Ramp held at {experiment.coverage:.0%}: the experiment is not healthy. "
            + " ".join(unhealthy)
        )
        return RampOutcome("hold", reason, {"coverage": experiment.coverage})
    before = experiment.coverage
    experiment_ramp(experiment=experiment, coverage=status.next_coverage)
    reason = (
        f"Ramp stage {stage + 1} of {len(status.stages)}: coverage {before:.0%} -> "
        f"{status.next_coverage:.0%}, the previous stage ran its minimum duration, every arm has "
        f"at least {status.min_units:,} units, and no guardrail shows harm."
    )
    return RampOutcome(
        "ramp", reason, {"from": before, "to": status.next_coverage, "stage": stage + 1}
    )
