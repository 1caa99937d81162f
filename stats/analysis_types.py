"""The analysis's input and output types: the checked ``AnalysisConfig``, the ``MetricResult``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import sequential
from .estimators import KINDS
from .gs_spending import SPENDING_FUNCTIONS

METHODS = ("sequential", "group_sequential", "fixed")
DIRECTIONS = ("increase", "decrease")


@dataclass(frozen=True)
class AnalysisConfig:
    kind: str = "mean"  # "binomial" | "mean" | "count" | "ratio"
    alpha: float = 0.05  # two-sided level of the shown p-values and of the fixed / CS views
    method: str = "sequential"  # "sequential" (confidence sequence) | "group_sequential" | "fixed"
    tuning_n: int = sequential.DEFAULT_TUNING_N  # confidence-sequence tuning size (total units)
    planned_n: int | None = None  # total planned units of the two arms, for group_sequential
    previous_fractions: tuple[float, ...] = ()  # information fractions of earlier looks
    spending: str = "obrien_fleming"  # or "power"
    rho: float = 2.0  # exponent of the power spending function alpha * t^rho
    cuped: bool = False
    prior_mean: float = 0.0  # Bayesian view, prior on the relative effect
    prior_sd: float | None = None  # None = flat prior
    margin: float | None = None  # non-inferiority margin as a relative lift (0.01 = 1%)
    direction: str = "increase"  # "increase" | "decrease": which side is good
    # One-sided levels of the deciding interval's two sides (None: alpha / 2 each, the
    # two-sided test at alpha). alpha_good: the side that declares an improvement or
    # non-inferiority; alpha_bad: the side that declares harm.
    alpha_good: float | None = None
    alpha_bad: float | None = None
    # Display-only numbers (p-values, the fixed and CS views, the Bayesian view) decide nothing;
    # the decision simulation turns them off to run thousands of experiments.
    p_values: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; expected one of {KINDS}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.spending not in SPENDING_FUNCTIONS:
            raise ValueError(f"unknown spending {self.spending!r}; expected {SPENDING_FUNCTIONS}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {DIRECTIONS}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        for name in ("alpha_good", "alpha_bad"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        if self.tuning_n <= 0:
            raise ValueError("tuning_n must be positive")
        if self.rho <= 0:
            raise ValueError("rho must be positive")
        if self.margin is not None and self.margin < 0:
            raise ValueError("margin must be non-negative (a relative lift, e.g. 0.01)")

    @property
    def good_level(self) -> float:
        return self.alpha_good if self.alpha_good is not None else self.alpha / 2.0

    @property
    def bad_level(self) -> float:
        return self.alpha_bad if self.alpha_bad is not None else self.alpha / 2.0

    @property
    def symmetric(self) -> bool:
        """Both sides at alpha / 2: the deciding interval is the two-sided one at alpha."""
        return math.isclose(self.good_level, self.alpha / 2.0) and math.isclose(
            self.bad_level, self.alpha / 2.0
        )


@dataclass(frozen=True)
class MetricResult:
    """Every number the dashboard shows; all floats finite or None."""

    control_n: int
    variant_n: int
    control_mean: float | None
    variant_mean: float | None
    lift_abs: float | None  # CUPED-adjusted when CUPED is applied
    lift_rel: float | None  # lift_abs / |control mean|: its sign is the sign of the change
    ci_low: float | None  # relative (Fieller), the deciding interval; None = unbounded
    ci_high: float | None
    ci_abs_low: float | None  # the deciding interval on the absolute difference
    ci_abs_high: float | None
    p_value: float | None  # two-sided, absolute test, valid under peeking for the method
    fixed_ci_low: float | None  # fixed-horizon view (relative, delta method)
    fixed_ci_high: float | None
    fixed_p_value: float | None
    cs_ci_low: float | None  # confidence-sequence view (relative, delta method), always computed
    cs_ci_high: float | None
    cs_p_value: float | None
    method: str  # the method actually used (group_sequential without a plan -> sequential)
    significant: bool  # improved or harmed
    improved: bool  # the good-side bound is past 0
    harmed: bool  # the harmful-side bound is past 0
    non_inferior: bool | None  # with a margin: the good-side bound is inside the margin
    chance_to_win: float | None
    credible_low: float | None
    credible_high: float | None
    cuped_variance_reduction: float | None  # fraction, e.g. 0.35
    information_fraction: float | None  # group_sequential: n / planned_n
    boundary_z: float | None  # group_sequential: the good side's bound at this look
    message: str | None  # why a number is None
    alpha_good: float | None = None  # the one-sided levels the interval was built at
    alpha_bad: float | None = None
    bound_bad_z: float | None = None  # group_sequential: the harmful side's bound at this look
    error: str | None = None  # the statistics cannot be right: no test (see analyze.py)


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float when it is finite, else None (a ``MetricResult`` holds no inf or NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
