"""Pure rules: keep / extend / rollback, per treatment arm and for the experiment (DESIGN 7)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MetricOutcome:
    """What the statistics said about one metric for one treatment arm."""

    metric: str
    role: str  # primary | secondary | guardrail
    variant: str
    lift_rel: float | None
    ci_low: float | None
    ci_high: float | None
    improved: bool
    harmed: bool
    non_inferior: bool | None


@dataclass(frozen=True)
class Decision:
    action: str  # keep | extend | rollback
    reasons: list[str] = field(default_factory=list)
    harm: bool = False  # rollback because of harm or ill health (auto-rollback acts on this)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f}%"


def _interval(o: MetricOutcome) -> str:
    return f"{_pct(o.lift_rel)} (interval {_pct(o.ci_low)} to {_pct(o.ci_high)})"


def decide_arm(
    outcomes: list[MetricOutcome],
    *,
    unhealthy_reasons: list[str],
    policy: str = "superiority",
    past_horizon: bool = False,
    extend_hint: str = "",
) -> Decision:
    if unhealthy_reasons:
        return Decision("rollback", list(unhealthy_reasons), harm=True)
    harms = [o for o in outcomes if o.role in ("guardrail", "primary") and o.harmed]
    if harms:
        return Decision(
            "rollback",
            [
                f"{o.role.capitalize()} '{o.metric}' is significantly worse for '{o.variant}': "
                f"{_interval(o)}."
                for o in harms
            ],
            harm=True,
        )
    primaries = [o for o in outcomes if o.role == "primary"]
    guardrails = [o for o in outcomes if o.role == "guardrail"]
    guardrails_ok = all(o.non_inferior for o in guardrails)
    if policy == "do_no_harm":
        winners = [o for o in primaries if o.non_inferior or o.improved]
        ship = primaries and len(winners) == len(primaries) and guardrails_ok
    else:
        winners = [o for o in primaries if o.improved]
        ship = bool(winners) and guardrails_ok
    if ship:
        reasons = [
            f"Primary '{o.metric}' improved for '{o.variant}': {_interval(o)}." for o in winners
        ]
        reasons += [
            f"Guardrail '{o.metric}' is within its margin: {_interval(o)}." for o in guardrails
        ]
        return Decision("keep", reasons)
    if past_horizon:
        return Decision(
            "rollback",
            ["No detectable improvement by the planned sample size or end date."],
        )
    reasons = []
    for o in primaries:
        reasons.append(
            f"Primary '{o.metric}' is not yet conclusive for '{o.variant}': {_interval(o)}."
        )
    for o in guardrails:
        if not o.non_inferior:
            reasons.append(
                f"Guardrail '{o.metric}' is not yet shown within its margin: {_interval(o)}."
            )
    if extend_hint:
        reasons.append(extend_hint)
    return Decision("extend", reasons or ["Not enough data yet."])


def decide_experiment(arms: dict[str, Decision]) -> Decision:
    """Rollback if any arm must roll back; keep if some arm should ship; else extend."""
    for action in ("rollback", "keep", "extend"):
        chosen = {k: d for k, d in arms.items() if d.action == action}
        if chosen:
            reasons = [r for d in chosen.values() for r in d.reasons]
            return Decision(action, reasons, harm=any(d.harm for d in chosen.values()))
    return Decision("extend", ["No treatment arm has data yet."])
