"""Per-arm estimators (mean, proportion, ratio, CUPED) and the effect between two arms.

Every formula mirrors GrowthBook's gbstats (``gbstats.models.statistics`` and
``gbstats.frequentist.tests``), which the tests use as the reference implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("binomial", "mean", "count", "ratio")


@dataclass(frozen=True)
class SampleStats:
    """One variant, one metric: per-unit sufficient statistics, summed in SQL."""

    n: int  # units
    sum: float  # sum of per-unit values (numerator for ratio metrics)
    sum_sq: float  # sum of squared per-unit values
    den_sum: float = 0.0  # ratio metrics: sum of per-unit denominators
    den_sum_sq: float = 0.0
    sum_prod: float = 0.0  # sum of value * denominator
    cov_sum: float = 0.0  # CUPED: sum of the pre-exposure covariate per unit
    cov_sum_sq: float = 0.0
    cov_sum_prod: float = 0.0  # sum of value * covariate


@dataclass(frozen=True)
class ArmEstimate:
    """What one arm contributes to an effect: Var(mean estimate) = variance / n."""

    n: int
    mean: float  # estimate entering the difference (CUPED-adjusted when CUPED is applied)
    unadjusted_mean: float  # raw mean (or raw ratio); the base of the relative lift
    variance: float  # per-unit variance of the estimator (delta-method / CUPED-adjusted)


@dataclass(frozen=True)
class CupedFit:
    """Pooled CUPED coefficient and the variance reduction it achieves on the difference."""

    theta: float
    applied: bool  # False: covariate carries no information, unadjusted estimate used
    variance_reduction: float  # 1 - Var_adjusted(diff) / Var_unadjusted(diff), >= 0


@dataclass(frozen=True)
class Effect:
    """A difference between arms with the variance of that difference (se**2)."""

    estimate: float
    variance: float
    dof: float  # Welch-Satterthwaite degrees of freedom (math.inf when not defined)

    @property
    def se(self) -> float:
        return math.sqrt(self.variance) if self.variance > 0 else 0.0

    @property
    def usable(self) -> bool:
        return (
            math.isfinite(self.estimate)
            and math.isfinite(self.variance)
            and self.variance > 0
            and self.dof > 0
        )


def sample_variance(n: float, total: float, total_sq: float) -> float:
    """Unbiased variance from sums: (sum_sq - sum**2 / n) / (n - 1); 0 when n <= 1.

    Clamped at 0 because floating-point cancellation can make a true 0 slightly negative.
    """
    if n <= 1:
        return 0.0
    return max((total_sq - total * total / n) / (n - 1), 0.0)


def sample_covariance(n: float, sum_x: float, sum_y: float, sum_xy: float) -> float:
    """Unbiased covariance from sums: (sum_xy - sum_x * sum_y / n) / (n - 1); 0 when n <= 1."""
    if n <= 1:
        return 0.0
    return (sum_xy - sum_x * sum_y / n) / (n - 1)


def _pow(x: float, k: int) -> float:
    """x**k without OverflowError: Python's float power raises, repeated products give inf."""
    out = 1.0
    for _ in range(k):
        out *= x
    return out


def _mean(n: float, total: float) -> float:
    return total / n if n > 0 else 0.0


def _value_variance(kind: str, n: float, total: float, total_sq: float) -> float:
    # gbstats ProportionStatistic uses p(1 - p) (denominator n); SampleMeanStatistic uses n - 1.
    if kind == "binomial":
        p = _mean(n, total)
        return max(p * (1.0 - p), 0.0)
    return sample_variance(n, total, total_sq)


def _covariate_variance(kind: str, n: float, total: float, total_sq: float) -> float:
    # The covariate is the same metric before exposure, so it has the same kind.
    return _value_variance(kind, n, total, total_sq)


def arm_estimate(stats: SampleStats, kind: str) -> ArmEstimate:
    """Mean and per-unit variance of one arm, without CUPED.

    mean/binomial/count: mean = sum / n, variance = sample variance (p(1-p) for binomial).
    ratio (sum / den_sum), delta method (gbstats RatioStatistic):
        Var = s_m^2 / mu_d^2 - 2 cov(m, d) mu_m / mu_d^3 + mu_m^2 s_d^2 / mu_d^4.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; expected one of {KINDS}")
    n = stats.n
    if kind != "ratio":
        mean = _mean(n, stats.sum)
        return ArmEstimate(n, mean, mean, _value_variance(kind, n, stats.sum, stats.sum_sq))
    ratio = stats.sum / stats.den_sum if stats.den_sum != 0 else 0.0
    mu_m = _mean(n, stats.sum)
    mu_d = _mean(n, stats.den_sum)
    if n <= 1 or _pow(mu_d, 4) == 0:  # also a denominator mean whose 4th power underflows
        return ArmEstimate(n, ratio, ratio, 0.0)
    var_m = sample_variance(n, stats.sum, stats.sum_sq)
    var_d = sample_variance(n, stats.den_sum, stats.den_sum_sq)
    cov = sample_covariance(n, stats.sum, stats.den_sum, stats.sum_prod)
    variance = (
        var_m / _pow(mu_d, 2)
        - 2.0 * cov * mu_m / _pow(mu_d, 3)
        + _pow(mu_m, 2) * var_d / _pow(mu_d, 4)
    )
    return ArmEstimate(n, ratio, ratio, max(variance, 0.0))


def cuped_theta(control: SampleStats, treatment: SampleStats, kind: str) -> float:
    """Pooled CUPED coefficient theta = Cov(Y, X) / Var(X) over both arms together.

    Deng et al. 2013 ("Improving the sensitivity of online controlled experiments by utilizing
    pre-experiment data", section 3.2); pooling as in gbstats ``compute_theta``: the moments are
    taken over the union of both arms (not centred per arm). 0 when Var(X) or Var(Y) is 0.
    """
    n = control.n + treatment.n
    var_pre = _covariate_variance(
        kind, n, control.cov_sum + treatment.cov_sum, control.cov_sum_sq + treatment.cov_sum_sq
    )
    var_post = _value_variance(
        kind, n, control.sum + treatment.sum, control.sum_sq + treatment.sum_sq
    )
    if var_pre <= 0 or var_post <= 0:
        return 0.0
    cov = sample_covariance(
        n,
        control.sum + treatment.sum,
        control.cov_sum + treatment.cov_sum,
        control.cov_sum_prod + treatment.cov_sum_prod,
    )
    return cov / var_pre


def cuped_arm_estimate(stats: SampleStats, kind: str, theta: float) -> ArmEstimate:
    """CUPED-adjusted arm: mean = mean_Y - theta mean_X,
    variance = s_Y^2 + theta^2 s_X^2 - 2 theta cov(Y, X) (gbstats RegressionAdjustedStatistic)."""
    n = stats.n
    mean_y = _mean(n, stats.sum)
    mean_x = _mean(n, stats.cov_sum)
    if n <= 1:
        return ArmEstimate(n, mean_y - theta * mean_x, mean_y, 0.0)
    var_y = _value_variance(kind, n, stats.sum, stats.sum_sq)
    var_x = _covariate_variance(kind, n, stats.cov_sum, stats.cov_sum_sq)
    cov = sample_covariance(n, stats.sum, stats.cov_sum, stats.cov_sum_prod)
    variance = var_y + _pow(theta, 2) * var_x - 2.0 * theta * cov
    return ArmEstimate(n, mean_y - theta * mean_x, mean_y, max(variance, 0.0))


def _diff_variance(control: ArmEstimate, treatment: ArmEstimate) -> float:
    if control.n <= 0 or treatment.n <= 0:
        return 0.0
    return control.variance / control.n + treatment.variance / treatment.n


def cuped_arms(
    control: SampleStats, treatment: SampleStats, kind: str
) -> tuple[ArmEstimate, ArmEstimate, CupedFit]:
    """Both arms CUPED-adjusted with the pooled theta, or unadjusted when that does not help.

    Falls back to the unadjusted estimate when theta is 0 (no covariate variance, as gbstats
    does) and also when the adjustment would not reduce the variance of the difference (a
    deliberate addition: a covariate that does not help is never used).
    """
    plain_c, plain_t = arm_estimate(control, kind), arm_estimate(treatment, kind)
    theta = cuped_theta(control, treatment, kind)
    if theta == 0.0:
        return plain_c, plain_t, CupedFit(0.0, False, 0.0)
    adj_c, adj_t = (
        cuped_arm_estimate(control, kind, theta),
        cuped_arm_estimate(treatment, kind, theta),
    )
    before, after = _diff_variance(plain_c, plain_t), _diff_variance(adj_c, adj_t)
    if before <= 0 or after >= before:
        return plain_c, plain_t, CupedFit(theta, False, 0.0)
    return adj_c, adj_t, CupedFit(theta, True, 1.0 - after / before)


def welch_dof(control: ArmEstimate, treatment: ArmEstimate) -> float:
    """Welch-Satterthwaite: (v_c/n_c + v_t/n_t)^2 / sum(v^2 / (n^2 (n - 1))) (Welch 1947)."""

    def term(arm: ArmEstimate) -> float:
        if arm.variance <= 0 or arm.n <= 1:
            return 0.0
        return _pow(arm.variance, 2) / (_pow(arm.n, 2) * (arm.n - 1))

    denominator = term(control) + term(treatment)
    numerator = _pow(_diff_variance(control, treatment), 2)
    if denominator <= 0:
        return math.inf if numerator > 0 else 0.0
    return numerator / denominator


def absolute_effect(control: ArmEstimate, treatment: ArmEstimate) -> Effect:
    """mean_t - mean_c with Var = v_c / n_c + v_t / n_t."""
    return Effect(
        treatment.mean - control.mean,
        _diff_variance(control, treatment),
        welch_dof(control, treatment),
    )


def relative_effect(control: ArmEstimate, treatment: ArmEstimate) -> Effect | None:
    """(mean_t - mean_c) / unadjusted mean_c; delta method (gbstats ``frequentist_variance``):
    Var = v_t / (mu_c^2 n_t) + v_c mu_t^2 / (mu_c^4 n_c), with the unadjusted means mu.

    None when the control mean is 0 (the relative lift is undefined).
    """
    mu_c, mu_t = control.unadjusted_mean, treatment.unadjusted_mean
    if _pow(mu_c, 4) == 0 or control.mean == 0 or control.n <= 0 or treatment.n <= 0:
        return None  # also a mean so close to 0 that its 4th power underflows
    estimate = (treatment.mean - control.mean) / mu_c
    variance = treatment.variance / (_pow(mu_c, 2) * treatment.n) + control.variance * _pow(
        mu_t, 2
    ) / (_pow(mu_c, 4) * control.n)
    return Effect(estimate, variance, welch_dof(control, treatment))


def control_mean_moments(
    control: SampleStats, kind: str, theta: float = 0.0
) -> tuple[float, float]:
    """What Fieller's interval needs besides the difference d = mean_t - mean_c:
    Var(mu_c), the variance of the control's unadjusted mean (or ratio), and Cov(d, mu_c).

    Without CUPED, Cov(d, mu_c) = -Var(mu_c). With CUPED (mean_c = ybar - theta xbar):
    Cov(d, ybar) = -(s_y^2 - theta cov(y, x)) / n_c (Deng et al. 2013's estimator, the
    covariance of two linear combinations of the arm's sample means)."""
    n = control.n
    if n <= 0:
        return 0.0, 0.0
    plain = arm_estimate(control, kind)
    var_b = plain.variance / n
    if theta == 0.0 or kind == "ratio":
        return var_b, -var_b
    cov_xy = sample_covariance(n, control.sum, control.cov_sum, control.cov_sum_prod)
    return var_b, -(plain.variance - theta * cov_xy) / n
