"""A dimension breakdown's statistics: every metric and treatment arm compared with control in
each level of a unit attribute, corrected for the breakdown's many comparisons, and a test per
(metric, treatment arm) of whether the effect differs between levels.

Exploratory by design: one fixed-horizon Welch comparison per (level, metric, arm) at the
experiment's alpha, Benjamini-Hochberg over all of them (the family is the breakdown:
levels x metrics x arms), with intervals at the matching false-coverage-rate level; and Cochran's
Q of the per-level relative lifts per (metric, arm), Holm-adjusted over the metrics x arms. The
decision about the experiment stays with the overall results (docs/statistics.md, "Dimension
breakdowns").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .analysis_types import AnalysisConfig, MetricResult
from .analyze import analyze_metric
from .estimators import SampleStats
from .heterogeneity import Heterogeneity, cochran_q, relative_lift
from .multiple_testing import benjamini_hochberg, ci_alpha, holm

EMPTY = SampleStats(n=0, sum=0.0, sum_sq=0.0)
LEVELS_CORRECTION = "benjamini_hochberg"
HETEROGENEITY_CORRECTION = "holm"

# level -> metric key -> variant key -> statistics
LevelStats = Mapping[str, Mapping[str, SampleStats]]


@dataclass(frozen=True)
class BreakdownMetric:
    key: str
    kind: str
    cuped: bool = False
    direction: str = "increase"


@dataclass(frozen=True)
class LevelComparison:
    """One (level, metric, treatment arm) against control."""

    level: int  # index into the levels given
    metric: BreakdownMetric
    variant: str
    result: MetricResult  # fixed-horizon; interval at the false-coverage-rate level
    config: AnalysisConfig  # the one the interval was built with
    adjusted_p_value: float | None  # Benjamini-Hochberg over the breakdown


@dataclass(frozen=True)
class HeterogeneityTest:
    """Cochran's Q across the levels for one (metric, treatment arm)."""

    metric: str
    variant: str
    test: Heterogeneity
    adjusted_p_value: float | None  # Holm over the metrics x arms


@dataclass(frozen=True)
class BreakdownAnalysis:
    comparisons: list[LevelComparison]
    heterogeneity: list[HeterogeneityTest]
    alpha: float
    tests: int  # m: the comparisons in the Benjamini-Hochberg family (those with a p-value)
    rejected: int  # R: of those, adjusted p-value below alpha
    interval_alpha: float  # the intervals' level, alpha R / m (alpha / m when R = 0)


def _config(metric: BreakdownMetric, alpha: float) -> AnalysisConfig:
    return AnalysisConfig(
        kind=metric.kind,
        alpha=alpha,
        method="fixed",
        cuped=metric.cuped,
        direction=metric.direction,
    )


def heterogeneity_tests(
    levels: Sequence[LevelStats],
    metrics: Sequence[BreakdownMetric],
    control: str,
    treatments: Sequence[str],
) -> list[HeterogeneityTest]:
    """Cochran's Q (``heterogeneity.cochran_q``) of each (metric, arm)'s per-level relative
    lift (``heterogeneity.relative_lift``; levels where it is not usable are left out), with
    Holm (1979) adjusted p-values over the family of all (metric, arm) tests that have one, so
    P(any adjusted p < alpha) <= alpha when no effect differs between levels."""
    tests = []
    for metric in metrics:
        for variant in treatments:
            effects = [
                relative_lift(
                    level.get(metric.key, {}).get(control, EMPTY),
                    level.get(metric.key, {}).get(variant, EMPTY),
                    metric.kind,
                    metric.cuped,
                )
                for level in levels
            ]
            usable = [e for e in effects if e is not None]
            test = cochran_q([e.estimate for e in usable], [e.variance for e in usable])
            tests.append((metric.key, variant, test))
    adjusted = holm([test.p_value for _, _, test in tests])
    return [
        HeterogeneityTest(key, variant, test, p)
        for (key, variant, test), p in zip(tests, adjusted, strict=True)
    ]


def _good(result: MetricResult, metric: BreakdownMetric) -> bool:
    d = result.lift_abs or 0.0
    return d > 0 if metric.direction == "increase" else d < 0


def analyze_breakdown(
    levels: Sequence[LevelStats],
    metrics: Sequence[BreakdownMetric],
    control: str,
    treatments: Sequence[str],
    alpha: float = 0.05,
) -> BreakdownAnalysis:
    """Every (level, metric, arm) by ``analyze_metric`` with the fixed-horizon method at
    ``alpha``; Benjamini & Hochberg (1995) adjusted p-values over all of them, ``significant``
    (and improved / harmed) when the adjusted p-value is below alpha; each interval rebuilt at
    alpha R / m, the false-coverage-rate level of Benjamini & Yekutieli (2005) for R of m
    selected, as the results do for secondary metrics. Then ``heterogeneity_tests``."""
    first: list[tuple[int, BreakdownMetric, str, MetricResult]] = []
    for index, level in enumerate(levels):
        for metric in metrics:
            by_arm = level.get(metric.key, {})
            for variant in treatments:
                result = analyze_metric(
                    by_arm.get(control, EMPTY), by_arm.get(variant, EMPTY), _config(metric, alpha)
                )
                first.append((index, metric, variant, result))
    adjusted = benjamini_hochberg([r.p_value if r.error is None else None for *_, r in first])
    tests = sum(1 for p in adjusted if p is not None)
    rejected = sum(1 for p in adjusted if p is not None and p < alpha)
    level_alpha = ci_alpha(LEVELS_CORRECTION, alpha, tests, rejected)
    comparisons = []
    for (index, metric, variant, result), q in zip(first, adjusted, strict=True):
        config = _config(metric, level_alpha)
        if q is not None and level_alpha < alpha:
            by_arm = levels[index].get(metric.key, {})
            rebuilt = analyze_metric(by_arm.get(control, EMPTY), by_arm.get(variant, EMPTY), config)
            # The p-values stay those of the test at alpha: the family's input.
            result = replace(rebuilt, p_value=result.p_value, fixed_p_value=result.fixed_p_value)
        significant = q is not None and q < alpha and result.lift_abs is not None
        good = significant and _good(result, metric)
        result = replace(
            result, significant=significant, improved=good, harmed=significant and not good
        )
        comparisons.append(LevelComparison(index, metric, variant, result, config, q))
    return BreakdownAnalysis(
        comparisons,
        heterogeneity_tests(levels, metrics, control, treatments),
        alpha,
        tests,
        rejected,
        level_alpha,
    )
