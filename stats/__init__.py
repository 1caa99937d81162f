"""abacus statistics engine: pure numpy/scipy functions from sufficient statistics to results.

See docs/statistics.md for the methods, formulas, references and defaults.
"""

from .analyze import METHODS, AnalysisConfig, MetricResult, analyze_metric
from .bayesian import BayesianResult, gaussian_posterior
from .estimators import KINDS, SampleStats
from .group_sequential import (
    crossing_probabilities,
    efficacy_bounds,
    inflation_factor,
    look_fractions,
    repeated_p_value,
    spent_alpha,
)
from .multiple_testing import benjamini_hochberg, bonferroni_alpha, ci_alpha, holm
from .power import Remaining, SampleSize, days_remaining, mde_for_sample, power, power_sample_size
from .quantiles import (
    QuantileDifference,
    QuantileHarmBound,
    quantile_difference,
    quantile_difference_from_histograms,
    quantile_harm_bound,
)
from .srm import SRM_P_THRESHOLD, SrmResult, srm_test
from .winsorize import order_statistics_needed, winsor_cap, winsor_cap_from_highest, winsorize

__all__ = [
    "KINDS",
    "METHODS",
    "AnalysisConfig",
    "BayesianResult",
    "MetricResult",
    "QuantileDifference",
    "QuantileHarmBound",
    "Remaining",
    "SampleSize",
    "SRM_P_THRESHOLD",
    "SampleStats",
    "SrmResult",
    "analyze_metric",
    "benjamini_hochberg",
    "bonferroni_alpha",
    "ci_alpha",
    "crossing_probabilities",
    "days_remaining",
    "efficacy_bounds",
    "gaussian_posterior",
    "holm",
    "inflation_factor",
    "look_fractions",
    "mde_for_sample",
    "power",
    "power_sample_size",
    "quantile_difference",
    "quantile_difference_from_histograms",
    "quantile_harm_bound",
    "repeated_p_value",
    "spent_alpha",
    "srm_test",
    "winsor_cap",
    "winsor_cap_from_highest",
    "order_statistics_needed",
    "winsorize",
]
