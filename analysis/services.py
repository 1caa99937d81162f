"""The analysis pipeline's public entry: what other apps, commands and tests call.

analysis_run(experiment_id): aggregate in SQL -> the decision policy -> snapshot, then act on
live runs (auto-rollback, ramp plan, webhook). Also queueing runs and backfills.

The work lives in modules with one job each:

- analysis.runs: queueing, the run lifecycle, backfills, stale runs;
- analysis.compute: read the database and call analysis.policy.evaluate (pure: the error budget
  split over primaries, guardrails and arms, which snapshots are looks, keep / extend /
  rollback);
- analysis.persist: store the snapshot and its rows (what the policy decided and why);
- analysis.act: auto-rollback, ramps, alerts and their webhooks, only at looks;
- analysis.dispatch: the one place that sends Celery tasks.
"""

from analysis.act import WEBHOOK_EVENTS
from analysis.runs import (
    analysis_backfill,
    analysis_enqueue,
    analysis_run,
    analysis_run_create,
    analysis_runs_expire,
)

__all__ = [
    "WEBHOOK_EVENTS",
    "analysis_backfill",
    "analysis_enqueue",
    "analysis_run",
    "analysis_run_create",
    "analysis_runs_expire",
]
