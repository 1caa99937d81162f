"""The pre-launch power calculator: sample size, detectable effect and duration for a planned
experiment (the power page and its API)."""

from dataclasses import dataclass
from typing import Any

from stats.power import (
    PIPELINE_LOOKS,
    InvalidInput,
    allocation_mde,
    allocation_sample_size,
    days_for_sample,
)

# power.py's argument names -> the calculator's field names (API query parameters).
_PLAN_FIELDS = {
    "baseline_mean": "baseline",
    "baseline_variance": "variance",
    "n_per_arm": "sample_size",
    "ratio": "weights",
    "stages": "ramp",
}


@dataclass(frozen=True)
class PowerPlan:
    method: str
    alpha_per_test: float  # alpha after the Bonferroni split over primaries and treatment arms
    per_arm: int  # units per variant with an even split; the largest arm otherwise
    arms: list[int]  # units per variant, in the order of the weights
    weights: list[float]  # the variants' shares of the experiment's traffic (sum 1)
    control: int  # index of the control in ``arms`` and ``weights``
    deciding: int  # index of the treatment arm whose comparison needs the most units
    total: int  # units over all variants: the planned sample size
    fixed_total: int  # what a fixed-horizon test would need
    inflation: float  # total over fixed_total: the price of peeking safely
    looks: int  # group-sequential looks assumed (the pipeline's, by default)
    mde: float  # relative MDE (given, or the one the given sample detects)
    days: float | None  # at daily_units a day at full coverage, through the ramp plan if any


def power_plan(
    *,
    kind: str,
    baseline: float,
    alpha: float,
    method: str,
    variance: float | None = None,
    mde: float | None = None,
    sample_size: int | None = None,
    power: float = 0.8,
    variants: int = 2,
    weights: list[float] | None = None,
    control: int = 0,
    primary_metrics: int = 1,
    daily_units: float | None = None,
    coverage: float = 1.0,
    ramp: list[dict[str, float]] | None = None,
    looks: int = PIPELINE_LOOKS,
) -> PowerPlan:
    """Sample size for an MDE, or the MDE a planned sample detects, as the analysis will test it:
    each treatment against the control at alpha / primaries / treatments (Bonferroni, like
    analysis.services), group-sequential with the pipeline's looks, the variants' weights, and
    the ramp plan ({"coverage", "min_hours"} stages; else the constant ``coverage``) for the
    duration. Raises ``InvalidInput`` whose ``field`` is one of this function's arguments."""
    try:
        return _power_plan(
            kind=kind,
            baseline=baseline,
            alpha=alpha,
            method=method,
            variance=variance,
            mde=mde,
            sample_size=sample_size,
            power=power,
            weights=list(weights) if weights else [1.0] * variants,
            control=control,
            primary_metrics=primary_metrics,
            daily_units=daily_units,
            coverage=coverage,
            ramp=ramp or [],
            looks=looks,
        )
    except InvalidInput as exc:
        raise InvalidInput(_PLAN_FIELDS.get(exc.field, exc.field), str(exc)) from exc


def _power_plan(
    *,
    kind: str,
    baseline: float,
    alpha: float,
    method: str,
    variance: float | None,
    mde: float | None,
    sample_size: int | None,
    power: float,
    weights: list[float],
    control: int,
    primary_metrics: int,
    daily_units: float | None,
    coverage: float,
    ramp: list[dict[str, float]],
    looks: int,
) -> PowerPlan:
    treatments = max(1, len(weights) - 1)
    alpha_per_test = alpha / max(1, primary_metrics) / treatments
    common: dict[str, Any] = dict(
        baseline_mean=baseline,
        baseline_variance=None if kind == "binomial" else variance,
        kind=kind,
        alpha=alpha_per_test,
        power=power,
        looks=looks,
    )
    if mde is None:
        if sample_size is None:
            raise InvalidInput("mde", "give either an MDE or a sample size")
        mde = allocation_mde(
            total=sample_size, weights=weights, control=control, design=method, **common
        )
    split = dict(weights=weights, control=control, mde=mde)
    sized = allocation_sample_size(design=method, **split, **common)
    fixed = allocation_sample_size(design="fixed", **split, **common)
    days = None
    if daily_units:
        stages = [(float(s["coverage"]), float(s["min_hours"])) for s in ramp]
        days = days_for_sample(
            units=sized.total, daily_units=daily_units, coverage=coverage, stages=stages
        )
    whole = sum(weights)
    return PowerPlan(
        method=method,
        alpha_per_test=alpha_per_test,
        per_arm=max(sized.arms),
        arms=list(sized.arms),
        weights=[w / whole for w in weights],
        control=control,
        deciding=sized.deciding,
        total=sized.total,
        fixed_total=fixed.total,
        inflation=sized.inflation,
        looks=looks,
        mde=mde,
        days=days,
    )
