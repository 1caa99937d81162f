"""How long a planned sample takes to enter: at fixed coverage, along a ramp, or at the pace seen.

Units arrive at daily_units x coverage a day; a ramp plan holds stage k at coverage c_k for its
min_hours h_k (advancing as soon as allowed) and the last stage until the sample is reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .power_problem import InvalidInput


@dataclass(frozen=True)
class Remaining:
    units: int  # more units needed (0 when the target is reached)
    days: float | None  # at the observed traffic rate; None when no traffic has been seen


def days_for_sample(
    *,
    units: float,
    daily_units: float,
    coverage: float = 1.0,
    stages: Sequence[tuple[float, float]] = (),
) -> float:
    """Days until ``units`` units have entered, at ``daily_units`` a day at full coverage.

    Without ``stages`` the coverage is constant: units / (daily_units x coverage). With a ramp
    plan, ``stages`` = ((c_1, h_1), ..., (c_K, h_K)) (coverage, minimum hours): stage k runs
    h_k hours at c_k, so after it U_k = sum_{j<=k} daily_units c_j h_j / 24 units have entered;
    the stage in which U reaches ``units`` ends the count, and the last stage runs until it does
    (its h_K is not a limit). Stages are assumed to advance as soon as they are allowed to, so
    this is the shortest duration the plan permits.
    """
    if not (math.isfinite(daily_units) and daily_units > 0):
        raise InvalidInput("daily_units", "daily units must be positive")
    if not stages:
        stages = ((coverage, 0.0),)
    hours = 0.0
    entered = 0.0
    for k, (cov, min_hours) in enumerate(stages):
        if not 0 < cov <= 1:
            raise InvalidInput("stages", f"stage {k + 1}: coverage must be in (0, 1]")
        if not (math.isfinite(min_hours) and min_hours >= 0):
            raise InvalidInput("stages", f"stage {k + 1}: minimum hours must be 0 or more")
        rate = daily_units * cov / 24.0  # units an hour
        last = k == len(stages) - 1
        if last or entered + rate * min_hours >= units:
            return (hours + max(units - entered, 0.0) / rate) / 24.0
        entered += rate * min_hours
        hours += min_hours
    raise AssertionError("unreachable")  # pragma: no cover


def days_remaining(*, current_units: int, required_units: int, elapsed_days: float) -> Remaining:
    """Units still needed and the days they take at the traffic seen so far
    (current_units / elapsed_days units a day)."""
    units = max(int(required_units) - int(current_units), 0)
    if units == 0:
        return Remaining(0, 0.0)
    if current_units <= 0 or elapsed_days <= 0:
        return Remaining(units, None)
    return Remaining(units, units / (current_units / elapsed_days))
