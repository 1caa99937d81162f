"""Pure rules: health findings, and keep / extend / rollback per treatment arm and for the
experiment (docs/statistics.md section 12), with reasons a product manager can act on.

No ORM and no settings: the inputs are numbers the stats engine produced, the outputs frozen
dataclasses. analysis/services.py feeds them and stores the result in the snapshot.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stats import (
    AnalysisConfig,
    SampleStats,
    analyze_metric,
    days_remaining,
    power_sample_size,
    srm_test,
)

MULTI_EXPOSURE_WARNING = 0.01  # share of exposed units seeing more than one variant
MULTI_EXPOSURE_UNHEALTHY = 0.5  # "most exposures multi-variant" makes the experiment unhealthy
EMPTY_ARM_EXPECTED = 100  # an arm expecting this many units but having none is broken
IMBALANCE_P = 0.001  # pre-exposure covariate differs between arms beyond chance
DEFAULT_MDE = 0.05  # relative lift used for "extend" estimates when the experiment has none
DEFAULT_POWER = 0.8


# --- health checks: one function per check, each returning a Finding ---------------------------


@dataclass(frozen=True)
class Finding:
    """The result of one health check. ``unhealthy`` findings make the recommendation rollback
    (and trigger auto-rollback); ``warning`` ones are shown; ``ok``/``info`` are recorded."""

    check: str  # srm | multi_exposure | no_exposures | empty_arm | pre_exposure_imbalance
    severity: str  # ok | info | warning | unhealthy
    message: str
    value: float | None = None  # the number the check judged (p-value, share, count)

    @property
    def unhealthy(self) -> bool:
        return self.severity == "unhealthy"


def check_srm(observed: Sequence[int], weights: Sequence[float]) -> Finding:
    """Sample ratio mismatch: the always-valid Dirichlet-multinomial test of units per arm
    against the weights, flagged at p < 0.001 (stats.srm_test); valid at every
    snapshot, so its share of the rollback budget does not grow with peeking."""
    srm = srm_test(list(observed), list(weights))
    if srm.flagged:
        return Finding(
            "srm",
            "unhealthy",
            f"Sample ratio mismatch (p = {srm.p_value:.2g}): the split of units differs from "
            "the configured weights, so the results cannot be trusted; check assignment and "
            "exposure logging.",
            srm.p_value,
        )
    return Finding("srm", "ok", srm.message or "Units are split as configured.", srm.p_value)


def check_multi_exposure(single_units: int, multi_units: int) -> Finding:
    """Share of exposed units that saw more than one variant (they are excluded)."""
    total = single_units + multi_units
    share = multi_units / total if total else 0.0
    if share > MULTI_EXPOSURE_UNHEALTHY:
        return Finding(
            "multi_exposure",
            "unhealthy",
            f"{share:.0%} of exposed units saw more than one variant; check that exposures log "
            "the unit id the assignment used.",
            share,
        )
    if share > MULTI_EXPOSURE_WARNING:
        return Finding(
            "multi_exposure",
            "warning",
            f"{share:.1%} of exposed units saw more than one variant ({multi_units} units, "
            "excluded from the analysis).",
            share,
        )
    return Finding("multi_exposure", "ok", f"{multi_units} multi-variant units excluded.", share)


def check_no_exposures(total_units: int) -> Finding:
    if total_units == 0:
        return Finding(
            "no_exposures",
            "warning",
            "No exposures yet: check that your service posts exposure events for this experiment.",
            0,
        )
    return Finding("no_exposures", "ok", f"{total_units} units exposed.", total_units)


def check_pre_start_exposures(count: int, phase_start: datetime | None) -> Finding:
    """Exposures stamped before the current phase started: stored, never counted (ingestion
    lists them as ``ignored``). Many of them mean a client clock or a replay is off."""
    if count <= 0 or phase_start is None:
        return Finding("pre_start_exposures", "ok", "No exposures before the phase start.", 0)
    return Finding(
        "pre_start_exposures",
        "warning",
        f"{count} exposure{'s are' if count != 1 else ' is'} stamped before this phase started "
        f"({phase_start:%Y-%m-%d %H:%M} UTC) and not counted: check the clients' clocks, or "
        "whether they replay old events.",
        count,
    )


def check_empty_arms(units_by_arm: dict[str, int], weights: dict[str, float]) -> Finding:
    """An arm with no units while the others have traffic. Broken (unhealthy) once the arm
    should hold at least EMPTY_ARM_EXPECTED units: P(0 | Poisson(100)) = e^-100."""
    total = sum(units_by_arm.values())
    weight_sum = sum(w for w in weights.values() if w > 0) or 1.0
    empty = [k for k, w in weights.items() if w > 0 and units_by_arm.get(k, 0) == 0]
    if not total or not empty:
        return Finding("empty_arm", "ok", "Every arm has units.", None)
    expected = min(total * weights[k] / weight_sum for k in empty)
    names = ", ".join(f"'{k}'" for k in empty)
    if expected >= EMPTY_ARM_EXPECTED:
        return Finding(
            "empty_arm",
            "unhealthy",
            f"No units reached {names} although about {expected:,.0f} were expected: the "
            "variant may fail before it logs its exposure.",
            expected,
        )
    return Finding("empty_arm", "info", f"No units in {names} yet.", expected)


def check_empty_metric(metric: str, sums_by_arm: dict[str, tuple[int, float]]) -> Finding:
    """An arm with units but not a single event of a metric that other arms do see."""
    silent = [k for k, (n, s) in sums_by_arm.items() if n > 0 and s == 0]
    busy = [k for k, (n, s) in sums_by_arm.items() if n > 0 and s > 0]
    if silent and busy:
        names = ", ".join(f"'{k}'" for k in silent)
        return Finding(
            "empty_arm",
            "warning",
            f"'{metric}' has no events at all from {names} while other arms have some: check "
            "that the variant still sends this event.",
            None,
        )
    return Finding("empty_arm", "ok", f"'{metric}' has events in every arm.", None)


def check_pre_exposure_imbalance(
    metric: str, variant: str, kind: str, control: SampleStats, treatment: SampleStats
) -> Finding:
    """The CUPED covariate (the metric before exposure) should not differ between arms:
    randomisation makes them equal in expectation. Welch test on the covariate means."""
    if kind == "ratio" or min(control.n, treatment.n) < 2:
        return Finding("pre_exposure_imbalance", "ok", "Not checked.", None)
    c = SampleStats(n=control.n, sum=control.cov_sum, sum_sq=control.cov_sum_sq)
    t = SampleStats(n=treatment.n, sum=treatment.cov_sum, sum_sq=treatment.cov_sum_sq)
    result = analyze_metric(c, t, AnalysisConfig(kind=kind, method="fixed", alpha=IMBALANCE_P))
    p = result.fixed_p_value
    if p is not None and p < IMBALANCE_P:
        lift = f" ({_pct(result.lift_rel)})" if result.lift_rel is not None else ""
        return Finding(
            "pre_exposure_imbalance",
            "warning",
            f"Before exposure, '{variant}' already differed from control on '{metric}'{lift}, "
            f"p = {p:.2g}: check for a bucketing or logging problem (CUPED corrects the "
            "estimate for it).",
            p,
        )
    return Finding("pre_exposure_imbalance", "ok", "Arms are balanced before exposure.", p)


# --- per-metric outcomes and the decision -------------------------------------------------------


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
    name: str = ""  # the metric's human name (defaults to its key)
    direction: str = "increase"
    margin: float | None = None
    alpha: float = 0.05  # 1 - alpha is the interval's coverage (both sides' levels added)
    error: str | None = None  # the metric could not be computed: it decides nothing

    @property
    def label(self) -> str:
        return self.name or self.metric


@dataclass(frozen=True)
class Extension:
    """How much longer to run: extra units over all arms, and days at the traffic so far."""

    units: int
    days: float | None
    mde: float
    metric: str  # the primary metric that needs the most units
    power: float = DEFAULT_POWER


@dataclass(frozen=True)
class Decision:
    action: str  # keep | extend | rollback
    reasons: list[str] = field(default_factory=list)
    harm: bool = False  # rollback because of harm or ill health (auto-rollback acts on this)
    variant: str = ""  # keep: the arm to ship
    extension: Extension | None = None
    # Why, as a code the dashboard, webhooks and exports read instead of re-deriving it:
    # unhealthy | harm | improvement | non_inferior | no_improvement | inconclusive | collecting
    cause: str = "inconclusive"


def metric_status(outcome: MetricOutcome) -> str:
    """error | improved | harmed | non_inferior | neutral, for the results table."""
    if outcome.error:
        return "error"
    if outcome.harmed:
        return "harmed"
    if outcome.improved:
        return "improved"
    if outcome.margin is not None and outcome.non_inferior:
        return "non_inferior"
    return "neutral"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _level(alpha: float) -> str:
    return f"{(1 - alpha) * 100:.4g}%"


def _interval(o: MetricOutcome) -> str:
    if o.lift_rel is None:
        return "no relative change (the control mean is 0)"
    if o.ci_low is None or o.ci_high is None:
        return f"{_pct(o.lift_rel)}, with an interval still too wide to bound"
    return f"{_pct(o.lift_rel)} ({_level(o.alpha)} interval {_pct(o.ci_low)} to {_pct(o.ci_high)})"


def _subject(o: MetricOutcome) -> str:
    return f"{o.label} ({o.role})"


def harm_reason(o: MetricOutcome) -> str:
    worse = "rose" if o.direction == "decrease" else "fell"
    return (
        f"{_subject(o)} {worse} in '{o.variant}': {_interval(o)}. The whole interval is on the "
        "harmful side, so this is not chance."
    )


def _win_reason(o: MetricOutcome) -> str:
    better = "fell" if o.direction == "decrease" else "rose"
    return f"{_subject(o)} {better} in '{o.variant}': {_interval(o)}."


def _safe_reason(o: MetricOutcome) -> str:
    margin = f"{(o.margin or 0) * 100:.3g}%"
    return (
        f"{_subject(o)} is not worse by more than its {margin} margin in '{o.variant}': "
        f"{_interval(o)}."
    )


def _unsure_reason(o: MetricOutcome) -> str:
    if o.error:
        return f"{_subject(o)} in '{o.variant}' could not be computed: {o.error}."
    if o.lift_rel is None or o.ci_low is None or o.ci_high is None:
        return f"{_subject(o)} in '{o.variant}': {_interval(o)}; no decision yet."
    return (
        f"{_subject(o)} in '{o.variant}': {_pct(o.lift_rel)} so far, but the {_level(o.alpha)} "
        f"interval ({_pct(o.ci_low)} to {_pct(o.ci_high)}) still includes no change."
    )


def _guardrail_open_reason(o: MetricOutcome) -> str:
    if o.error:
        return (
            f"{_subject(o)} in '{o.variant}' could not be computed ({o.error}), so it cannot "
            "clear the change."
        )
    margin = f"{(o.margin or 0) * 100:.3g}%"
    harm = "a rise" if o.direction == "decrease" else "a drop"
    return (
        f"{_subject(o)} in '{o.variant}': {harm} of more than {margin} cannot be ruled out yet "
        f"({_interval(o)})."
    )


def extension_reason(ext: Extension) -> str:
    if ext.units <= 0:
        return (
            f"The sample needed to detect a {ext.mde:.0%} change in {ext.metric} with "
            f"{ext.power:.0%} power is reached: any real effect is probably smaller than that. "
            "Conclude, or keep running to detect a smaller one."
        )
    days = (
        f", about {ext.days:,.1f} more days at the traffic so far"
        if ext.days is not None
        else " (no traffic yet to estimate the days)"
    )
    return (
        f"Run longer: about {ext.units:,} more units{days}, to detect a {ext.mde:.0%} change in "
        f"{ext.metric} with {ext.power:.0%} power."
    )


def decide_arm(
    outcomes: list[MetricOutcome],
    *,
    unhealthy_reasons: list[str],
    policy: str = "superiority",
    past_horizon: bool = False,
    extension: Extension | None = None,
    horizon_reason: str = "",
) -> Decision:
    """The decision for one treatment arm, in order: rollback (ill health or harm),
    keep, then extend (or rollback for no detectable improvement past the horizon)."""
    variant = outcomes[0].variant if outcomes else ""
    if unhealthy_reasons:
        return Decision("rollback", list(unhealthy_reasons), harm=True, cause="unhealthy")
    harms = [o for o in outcomes if o.role in ("guardrail", "primary") and o.harmed]
    if harms:
        return Decision("rollback", [harm_reason(o) for o in harms], harm=True, cause="harm")
    primaries = [o for o in outcomes if o.role == "primary"]
    guardrails = [o for o in outcomes if o.role == "guardrail"]
    guardrails_ok = all(o.non_inferior for o in guardrails)
    if policy == "do_no_harm":
        winners = [o for o in primaries if o.improved or o.non_inferior]
        ship = bool(primaries) and len(winners) == len(primaries) and guardrails_ok
    else:
        winners = [o for o in primaries if o.improved]
        ship = bool(winners) and guardrails_ok
    if ship:
        reasons = [_win_reason(o) if o.improved else _safe_reason(o) for o in winners]
        reasons += [_safe_reason(o) for o in guardrails]
        cause = "improvement" if any(o.improved for o in winners) else "non_inferior"
        return Decision("keep", reasons, variant=variant, cause=cause)
    if past_horizon:
        reasons = [
            horizon_reason or "No detectable improvement by the planned sample size or end date."
        ]
        reasons += [_unsure_reason(o) for o in primaries if not o.improved]
        return Decision("rollback", reasons, cause="no_improvement")
    reasons = [_win_reason(o) if o.improved else _unsure_reason(o) for o in primaries]
    reasons += [_guardrail_open_reason(o) for o in guardrails if not o.non_inferior]
    if extension is not None:
        reasons.append(extension_reason(extension))
    return Decision("extend", reasons or ["Not enough data yet."], extension=extension)


def decide_experiment(arms: dict[str, Decision]) -> Decision:
    """Harm in any arm rolls the whole experiment back (an arm cannot be switched off alone);
    otherwise ship the best arm that may ship; otherwise extend (the longest extension);
    otherwise every arm ran out of time: rollback for no detectable improvement."""
    if not arms:
        return Decision("extend", ["No treatment arm has data yet."])
    harmful = {k: d for k, d in arms.items() if d.action == "rollback" and d.harm}
    if harmful:
        reasons = list(dict.fromkeys(r for d in harmful.values() for r in d.reasons))
        causes = {d.cause for d in harmful.values()}
        cause = "unhealthy" if "unhealthy" in causes else "harm"
        return Decision("rollback", reasons, harm=True, cause=cause)
    keepers = {k: d for k, d in arms.items() if d.action == "keep"}
    if keepers:
        variant = next(iter(keepers))
        reasons = [r for d in keepers.values() for r in d.reasons]
        if len(keepers) > 1:
            reasons.insert(0, f"Several arms may ship; '{variant}' is listed first.")
        return Decision("keep", reasons, variant=variant, cause=keepers[variant].cause)
    extending = {k: d for k, d in arms.items() if d.action == "extend"}
    if extending:
        extensions = [d.extension for d in extending.values() if d.extension is not None]
        longest = max(extensions, key=lambda e: e.units) if extensions else None
        reasons = [r for d in extending.values() for r in d.reasons]
        return Decision("extend", list(dict.fromkeys(reasons)), extension=longest)
    reasons = list(dict.fromkeys(r for d in arms.values() for r in d.reasons))
    return Decision("rollback", reasons, cause="no_improvement")


# --- how much longer -----------------------------------------------------------------------------


def estimate_extension(
    *,
    metric: str,
    kind: str,
    control: SampleStats,
    variance: float,
    mde: float | None,
    alpha: float,
    design: str,
    n_arms: int,
    current_units: int,
    elapsed_days: float,
    tuning_n: float | None = None,
    planned_units: int | None = None,
    power: float = DEFAULT_POWER,
) -> Extension | None:
    """Extra units (all arms) and days to reach ``power`` at the relative ``mde`` (default 5%)
    on one primary metric, from the control arm's mean and per-unit ``variance``; at least up
    to the planned sample when there is one. None when the baseline gives nothing to go on."""
    mde = mde or DEFAULT_MDE
    if control.n < 2:
        return None
    mean = control.sum / control.n if kind != "ratio" else _ratio(control)
    if mean is None or mean == 0 or not math.isfinite(mean):
        return None
    if kind == "binomial" and not 0 < mean < 1:
        return None
    if kind != "binomial" and variance <= 0:
        return None
    try:
        size = power_sample_size(
            mde=mde,
            baseline_mean=mean,
            baseline_variance=None if kind == "binomial" else variance,
            kind=kind,
            alpha=alpha,
            power=power,
            n_arms=n_arms,
            design=design if design in ("fixed", "sequential", "group_sequential") else "fixed",
            tuning_n=tuning_n,
        )
    except ValueError:
        return None
    required = max(size.total, planned_units or 0)
    remaining = days_remaining(
        current_units=current_units, required_units=required, elapsed_days=elapsed_days
    )
    return Extension(remaining.units, remaining.days, mde, metric, power)


def _ratio(stats: SampleStats) -> float | None:
    return stats.sum / stats.den_sum if stats.den_sum else None
