"""One guarded release's page, read from what is stored: its steps on a timeline with the
transitions that moved it, the current decision in plain words, and the checks over time for
the charts (also served as JSON for the page's refresh). The lists and the API's reads are
releases/selectors.py's.

Nothing here decides: the words come from the stored decision (``Release.decision``, written by
the monitor from releases/policy.py) and the stored transitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import (
    FINAL_STATUSES,
    LIVE_STATUSES,
    Release,
    ReleaseCheck,
    ReleaseMetric,
    ReleaseStatus,
    ReleaseTransition,
)
from .policy import ADVANCE, COMPLETE, HOLD, ROLLBACK, Step
from .selectors import release_metrics, step_percent
from .services import MONITOR

# The charts draw at most this many checks (a week at a one-minute cadence is 10,080): each
# step keeps its first and last check and every check that did not hold; the rest are evenly
# thinned. The table of the latest check is never thinned.
MAX_CHART_CHECKS = 600


def quantile_label(quantile: float | None) -> str:
    """0.95 -> 'p95', 0.999 -> 'p99.9'."""
    if quantile is None:
        return ""
    return f"p{quantile * 100:.4g}"


def transition_words(t: ReleaseTransition, steps: list[dict[str, Any]]) -> str:
    """What a transition did, in a few words ("advanced to 25%", "paused", "rolled back")."""

    def pct(i: int | None) -> str:
        return f"{steps[i]['percent']:g}%" if i is not None and 0 <= i < len(steps) else "?"

    if not t.from_status:
        return "created"
    if t.to_status == ReleaseStatus.RUNNING and t.from_status == ReleaseStatus.SCHEDULED:
        return f"started at {pct(t.to_step)}"
    if t.to_status == ReleaseStatus.COMPLETED:
        return "completed: the new variation is served to everyone"
    if t.to_status == ReleaseStatus.ROLLED_BACK:
        if t.from_status == ReleaseStatus.SCHEDULED:
            return "cancelled before it started"
        return "rolled back: the baseline is served to everyone"
    if t.to_status == ReleaseStatus.FAILED:
        return "stopped (failed): the flag was left as it was"
    if t.from_step != t.to_step:
        words = f"advanced from {pct(t.from_step)} to {pct(t.to_step)}"
        return words + (" (still paused)" if t.to_status == ReleaseStatus.PAUSED else "")
    if t.to_status == ReleaseStatus.PAUSED:
        return "paused"
    if t.from_status == ReleaseStatus.PAUSED and t.to_status == ReleaseStatus.RUNNING:
        return "resumed"
    return f"{t.from_status} → {t.to_status}"


def _is_step_start(t: ReleaseTransition, index: int) -> bool:
    if t.to_step != index or not t.from_status:
        return False
    started = t.from_status == ReleaseStatus.SCHEDULED and t.to_status == ReleaseStatus.RUNNING
    return started or (t.from_step is not None and t.from_step != index)


ACTION_WORDS = {
    ADVANCE: "Advance",
    HOLD: "Hold",
    ROLLBACK: "Roll back",
    COMPLETE: "Complete",
    "failed": "Stopped",  # services' _fail: the release could not go on
}


@dataclass
class TransitionRow:
    transition: ReleaseTransition
    words: str
    by_monitor: bool

    @property
    def at(self) -> datetime:
        return self.transition.at

    @property
    def who(self) -> str:
        return "the monitor" if self.by_monitor else self.transition.actor_label


def transition_row(t: ReleaseTransition, steps: list[dict[str, Any]]) -> TransitionRow:
    by_monitor = t.actor_id is None and t.actor_label == MONITOR
    return TransitionRow(t, transition_words(t, steps), by_monitor)


@dataclass
class StepRow:
    index: int
    percent: float
    min_minutes: float
    min_units: int
    state: str  # done | current | stopped | pending
    started_at: datetime | None = None
    ended_at: datetime | None = None
    start: TransitionRow | None = None
    events: list[TransitionRow] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def full(self) -> bool:
        return Step(self.percent).full


@dataclass
class Decision:
    """The latest decision in plain words: what the monitor does and what it waits for."""

    action: str
    action_words: str
    headline: str
    reasons: list[str]
    waits_for: list[str]
    at: datetime | None  # the data's cut-off of the latest analysis (or when it started)
    analysed: bool  # whether the decision comes from an analysis (a check), not the start
    next_analysis_at: datetime | None
    when: str  # the two times above in words, for the page and its refresh


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value


def _when_words(at: datetime | None, analysed: bool, next_at: datetime | None) -> str:
    """'Last analysed with data through 2025-01-02 10:02:11 UTC. Next analysis about 10:03:11
    UTC.' ('Decided at ...' for a decision of the start, not of an analysis)."""
    words = []
    if at is not None:
        said = "Last analysed with data through" if analysed else "Decided at"
        words.append(f"{said} {_utc(at):%Y-%m-%d %H:%M:%S} UTC.")
    if next_at is not None:
        words.append(f"Next analysis about {_utc(next_at):%H:%M:%S} UTC.")
    return " ".join(words)


def check_words(check: ReleaseCheck) -> str:
    """A check in a line: 'step 2 at 5%, data through 10:02:11 UTC · 120 new vs 118 baseline
    units, 3 excluded (served both)'."""
    units = check.units or {}
    words = (
        f"step {check.step + 1} at {check.percent:g}%, data through {_utc(check.at):%H:%M:%S} UTC"
        f" · {units.get('new') or 0} new vs {units.get('baseline') or 0} baseline units"
    )
    if units.get("excluded"):
        words += f", {units['excluded']} excluded (served both)"
    return words


def decision_of(release: Release) -> Decision:
    d = release.decision or {}
    action = d.get("action", "")
    reasons = [str(r) for r in d.get("reasons") or []]
    waits = [str(w) for w in d.get("waits_for") or []]
    percent = step_percent(release)
    at = f"{percent:g}%" if percent is not None else "its step"
    status = release.status
    if status == ReleaseStatus.SCHEDULED:
        when = f"{release.start_at:%Y-%m-%d %H:%M} UTC" if release.start_at else "soon"
        headline = f"Scheduled: starts at {when}, serving {at} the new variation."
    elif status == ReleaseStatus.COMPLETED:
        headline = "Completed: every unit gets the new variation."
    elif status == ReleaseStatus.ROLLED_BACK:
        headline = "Rolled back: every unit gets the baseline."
    elif status == ReleaseStatus.FAILED:
        headline = "Stopped: the release could not go on (see why below)."
    elif action == ROLLBACK:
        headline = (
            f"Harm detected at {at}. Auto-rollback is off: a person decides whether to roll "
            "it back."
        )
    elif status == ReleaseStatus.PAUSED:
        headline = (
            f"Paused at {at}: steps do not advance; the monitor still rolls back on harm."
            if release.auto_rollback
            else f"Paused at {at}: steps do not advance."
        )
    elif action == HOLD and waits:
        headline = f"Holding at {at} until the step has what it needs."
    elif action == HOLD:
        headline = f"Holding at {at}."
    elif action in (ADVANCE, COMPLETE):
        headline = f"No harm at {at}: moving on."
    else:
        headline = f"Running at {at}."
    decided_at, analysed = _parse(d.get("at")), bool(d.get("check"))
    next_at = release.next_analysis_at if status in LIVE_STATUSES else None
    return Decision(
        action=action,
        action_words=ACTION_WORDS.get(action, action.capitalize() or "—"),
        headline=headline,
        reasons=reasons,
        waits_for=waits,
        at=decided_at,
        analysed=analysed,
        next_analysis_at=next_at,
        when=_when_words(decided_at, analysed, next_at),
    )


# -- one release's page -------------------------------------------------------------------------


def timeline(release: Release, transitions: list[ReleaseTransition]) -> list[StepRow]:
    """The steps in order with when each started and ended, and what happened during each (the
    transitions that left it, paused it or resumed it: who or what, and why)."""
    steps = release.steps or []
    rows_by_transition = [transition_row(t, steps) for t in transitions]
    rows = []
    for i, step in enumerate(steps):
        start = next((r for r in rows_by_transition if _is_step_start(r.transition, i)), None)
        events = [
            r
            for r in rows_by_transition
            if r.transition.from_status
            and r.transition.from_step == i
            and r is not start
            and not (
                r.transition.from_status == ReleaseStatus.SCHEDULED
                and r.transition.to_status == ReleaseStatus.RUNNING
            )
            and start is not None
        ]
        if i < release.step:
            state = "done"
        elif i > release.step:
            state = "pending"
        elif release.status == ReleaseStatus.COMPLETED:
            state = "done"
        elif release.status in (ReleaseStatus.ROLLED_BACK, ReleaseStatus.FAILED):
            state = "stopped" if start is not None else "pending"
        elif release.status == ReleaseStatus.SCHEDULED:
            state = "pending"
        else:
            state = "current"
        leaving = next(
            (
                r
                for r in events
                if r.transition.to_step != i or r.transition.to_status in FINAL_STATUSES
            ),
            None,
        )
        rows.append(
            StepRow(
                index=i,
                percent=float(step["percent"]),
                min_minutes=float(step.get("min_minutes", 0)),
                min_units=int(step.get("min_units", 0)),
                state=state,
                # The current step's start is the monitor's window: step_started_at.
                started_at=(
                    release.step_started_at
                    if state == "current" and release.step_started_at
                    else (start.at if start else None)
                ),
                ended_at=leaving.at if leaving and start else None,
                start=start,
                events=events,
            )
        )
    return rows


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _thin(rows: list[tuple[int, int, str]], limit: int) -> list[int]:
    """Ids of the checks to draw: all when few; otherwise each step's first and last, every
    check that did not hold, and evenly spaced others up to about ``limit``."""
    if len(rows) <= limit:
        return [r[0] for r in rows]
    keep: set[int] = set()
    by_step: dict[int, list[tuple[int, int, str]]] = {}
    for row in rows:
        by_step.setdefault(row[1], []).append(row)
        if row[2] != "hold":
            keep.add(row[0])
    for group in by_step.values():
        keep.update((group[0][0], group[-1][0]))
    room = max(limit - len(keep), 1)
    stride = max(len(rows) // room, 1)
    keep.update(r[0] for r in rows[::stride])
    return [r[0] for r in rows if r[0] in keep]


def checks_for_chart(release: Release, limit: int = MAX_CHART_CHECKS) -> list[ReleaseCheck]:
    """The release's checks in time order (all steps), thinned to about ``limit``."""
    checks = ReleaseCheck.objects.filter(release=release).order_by("at", "id")
    rows = list(checks.values_list("id", "step", "action"))
    ids = _thin(rows, limit)
    if len(ids) == len(rows):
        return list(checks)
    return list(checks.filter(pk__in=ids))


@dataclass
class ReleasePage:
    release: Release
    metrics: list[ReleaseMetric]
    transitions: list[ReleaseTransition]
    steps: list[StepRow]
    decision: Decision
    latest: ReleaseCheck | None
    latest_rows: list[dict[str, Any]]  # the latest check's metric rows, with their labels
    latest_when: str  # check_words of the latest check ("" before the first)
    outside_steps: list[TransitionRow]  # created, or cancelled before it started
    live: bool
    chart_data: dict[str, Any]  # release_page_data's, read once with the rest


def _transitions(release: Release) -> list[ReleaseTransition]:
    return list(
        ReleaseTransition.objects.filter(release=release)
        .select_related("actor")
        .order_by("at", "id")
    )


def release_page(release: Release) -> ReleasePage:
    """What the release's page shows, its chart data included (five queries)."""
    transitions = _transitions(release)
    steps = timeline(release, transitions)
    placed = {r.transition.pk for s in steps for r in [s.start, *s.events] if r is not None}
    latest = ReleaseCheck.objects.filter(release=release).order_by("-at", "-id").first()
    metrics = release_metrics(release)
    decision = decision_of(release)
    labels = {rm.metric.key: _metric_json(rm) for rm in metrics}
    latest_rows = [
        {**row, "label": labels.get(row.get("key"), {}).get("label", row.get("key"))}
        for row in (latest.metrics if latest else []) or []
    ]
    return ReleasePage(
        release=release,
        metrics=metrics,
        transitions=transitions,
        steps=steps,
        decision=decision,
        latest=latest,
        latest_rows=latest_rows,
        latest_when=check_words(latest) if latest else "",
        outside_steps=[
            transition_row(t, release.steps or []) for t in transitions if t.pk not in placed
        ],
        live=release.status in LIVE_STATUSES,
        chart_data=_page_data(release, transitions, steps, decision, metrics),
    )


def _metric_json(rm: ReleaseMetric) -> dict[str, Any]:
    m = rm.metric
    q = quantile_label(m.quantile) if m.kind == "quantile" else ""
    return {
        "key": m.key,
        "name": m.name,
        "label": m.name if not q or q in m.name else f"{m.name} ({q})",
        "kind": m.kind,
        "quantile": m.quantile,
        "quantile_label": q,
        "direction": m.direction,
        "role": rm.role,
        "margin": rm.non_inferiority_margin,
    }


def release_page_data(release: Release) -> dict[str, Any]:
    """The page's data as JSON-able values: what the charts draw and what the refresh updates
    (the page's refresh reads it alone; the page has it in ``release_page``)."""
    transitions = _transitions(release)
    return _page_data(
        release,
        transitions,
        timeline(release, transitions),
        decision_of(release),
        release_metrics(release),
    )


def _page_data(
    release: Release,
    transitions: list[ReleaseTransition],
    steps: list[StepRow],
    decision: Decision,
    metrics: list[ReleaseMetric],
) -> dict[str, Any]:
    checks = checks_for_chart(release)
    percent = step_percent(release)
    return {
        "release": {
            "id": release.pk,
            "status": release.status,
            "status_label": release.get_status_display(),
            "live": release.status in LIVE_STATUSES,
            "step": release.step,
            "steps": len(release.steps or []),
            "percent": percent,
            "variation": release.variation,
            "baseline_variation": release.baseline_variation,
            "auto_rollback": release.auto_rollback,
            "transitions": len(transitions),
            "started_at": _iso(release.started_at),
            "finished_at": _iso(release.finished_at),
        },
        "decision": {
            "action": decision.action,
            "action_words": decision.action_words,
            "headline": decision.headline,
            "reasons": decision.reasons,
            "waits_for": decision.waits_for,
            "at": _iso(decision.at),
            "analysed": decision.analysed,
            "next_analysis_at": _iso(decision.next_analysis_at),
            "when": decision.when,
        },
        "steps": [
            {
                "index": s.index,
                "percent": s.percent,
                "min_minutes": s.min_minutes,
                "min_units": s.min_units,
                "state": s.state,
                "started_at": _iso(s.started_at),
                "ended_at": _iso(s.ended_at),
            }
            for s in steps
        ],
        "metrics": [_metric_json(rm) for rm in metrics],
        # The latest check is the last one drawn (thinning keeps each step's last).
        "latest_when": check_words(checks[-1]) if checks else "",
        "checks": [
            {
                "id": c.pk,
                "at": c.at.isoformat(),
                "step": c.step,
                "percent": c.percent,
                "action": c.action,
                "units": c.units,
                "metrics": {row.get("key"): row for row in c.metrics or [] if row.get("key")},
            }
            for c in checks
        ],
    }


# -- the API: a window of checks, and the names a body gives ------------------------------------
