"""The health problems a results page must not hide: the snapshot's findings with what to
check, plus stale results and a failed analysis."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from analysis.models import AnalysisRun, ResultSnapshot, RunStatus
from experiments.models import Experiment, ExperimentStatus


@dataclass(frozen=True)
class Finding:
    """A health problem the page must not hide: what is wrong and what to check."""

    kind: str  # a health check (srm, multi_exposure, no_exposures, ...), stale, run_failed
    level: str  # error (the numbers are not to be trusted) | warning
    title: str
    message: str
    checks: list[str] = field(default_factory=list)


_CHECKS = {
    "srm": [
        "Is the exposure event logged the same way in every variant (same page, same moment)?",
        "Do redirects, caching or bots drop units from one variant only?",
        "Was the split or targeting changed while the experiment ran?",
    ],
    "multi_exposure": [
        "Is the unit id the same one the assignment used (hash attribute)?",
        "Does the service cache a variant across users, or log exposures before assigning?",
    ],
    "no_exposures": [
        "Does your service post exposure events to /api/v1/events with this experiment's key?",
        "Is the experiment running, and do its targeting and coverage let units in?",
    ],
    "empty_arm": [
        "Does the variant fail (error page, crash) before it logs its exposure or the event?",
        "Is the event name the same in the variant's code as in the metric definition?",
    ],
    "pre_exposure_imbalance": [
        "Did units enter the experiment at different times or through different paths per arm?",
        "Is the bucketing attribute stable for a unit (not a session or request id)?",
    ],
    "stale": [
        "Is the Celery worker running (and beat, which schedules the refresh)?",
        "Press Refresh to queue an analysis now.",
    ],
    "run_failed": ["Read the error below; the worker log has the full traceback."],
    "pre_start_exposures": [
        "Are the clients' clocks right? Events carry the client's timestamp.",
        "Does a client replay old events (a queue drained after an outage, a backfill)?",
        "Was the experiment restarted or its targeting changed (a new phase) while clients "
        "still sent the earlier phase's events?",
    ],
    "metric_error": [
        "Is an event value absurdly large? Delete or exclude it (docs/operations.md, "
        "'Removing bad events'); new events are bounded at ingestion.",
        "Does a ratio metric's denominator event reach the control arm at all?",
    ],
}
_TITLES = {
    "srm": "Sample ratio mismatch",
    "multi_exposure": "Units exposed to more than one variant",
    "no_exposures": "No data yet",
    "empty_arm": "A variant is missing data",
    "pre_exposure_imbalance": "Arms differed before exposure",
    "metric_error": "A metric could not be computed",
    "pre_start_exposures": "Exposures before the phase start are not counted",
}


def _classify(warning: str) -> str:
    """The check behind a free-text warning (snapshots that store only their messages)."""
    text = warning.lower()
    if "sample ratio" in text:
        return "srm"
    if "more than one variant" in text:
        return "multi_exposure"
    if "no exposures" in text:
        return "no_exposures"
    if "no units reached" in text or "no events at all" in text:
        return "empty_arm"
    if "before exposure" in text:
        return "pre_exposure_imbalance"
    return "other"


def _snapshot_findings(health: dict[str, Any]) -> list[Finding]:
    findings = []
    structured = health.get("findings")
    if isinstance(structured, list) and structured:
        # {"check", "severity": ok | info | warning | unhealthy, "message", "value"}
        for f in structured:
            severity = f.get("severity")
            if severity not in ("warning", "unhealthy"):
                continue
            kind = f.get("check") or "other"
            findings.append(
                Finding(
                    kind,
                    "error" if severity == "unhealthy" else "warning",
                    _TITLES.get(kind, "Check the data"),
                    f.get("message", ""),
                    _CHECKS.get(kind, []),
                )
            )
        return findings
    unhealthy = health.get("healthy") is False
    for warning in health.get("warnings", []):
        kind = _classify(warning)
        level = (
            "error" if unhealthy and kind in ("srm", "multi_exposure", "empty_arm") else "warning"
        )
        findings.append(
            Finding(
                kind, level, _TITLES.get(kind, "Check the data"), warning, _CHECKS.get(kind, [])
            )
        )
    if health.get("srm_flagged") and not any(f.kind == "srm" for f in findings):
        findings.append(
            Finding(
                "srm",
                "error",
                _TITLES["srm"],
                f"The split of units differs from the configured weights "
                f"(p = {health.get('srm_p_value', 0):.2g}).",
                _CHECKS["srm"],
            )
        )
    return findings


def health_findings(
    experiment: Experiment,
    snapshot: ResultSnapshot | None,
    last_run: AnalysisRun | None,
    now: datetime | None = None,
) -> list[Finding]:
    """The snapshot's health problems with what to check, plus a stale or failed analysis;
    errors (the numbers cannot be trusted) first."""
    now = now or timezone.now()
    findings: list[Finding] = []
    if snapshot is not None:
        findings += _snapshot_findings(snapshot.health or {})
        if experiment.status == ExperimentStatus.RUNNING:
            age = (now - snapshot.computed_at).total_seconds()
            interval = float(getattr(settings, "ABACUS_ANALYSIS_INTERVAL", 300))
            if age > max(3 * interval, 900):
                findings.append(
                    Finding(
                        "stale",
                        "warning",
                        "Results are out of date",
                        f"The latest snapshot is {_age(age)} old, although the experiment is "
                        f"running and is analysed every {_age(interval)}.",
                        _CHECKS["stale"],
                    )
                )
    if last_run is not None and last_run.status == RunStatus.FAILED:
        findings.append(
            Finding(
                "run_failed",
                "error",
                "The last analysis failed",
                last_run.error or "No error message was recorded.",
                _CHECKS["run_failed"],
            )
        )
    return sorted(findings, key=lambda f: f.level != "error")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"
