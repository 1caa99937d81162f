"""abacus statistics engine: pure numpy/scipy functions from sufficient statistics to results.

See docs/statistics.md for the methods, formulas, references and defaults.
"""

from .analyze import METHODS, AnalysisConfig, MetricResult, analyze_metric
from .bayesian import BayesianResult, gaussian_posterior
from .estimators import KINDS, SampleStats
from .group_sequential import efficacy_bounds, inflation_factor, look_fractions, spent_alpha
from .multiple_testing import benjamini_hochberg, bonferroni_alpha, ci_alpha, holm
from .power import Remaining, SampleSize, days_remaining, mde_for_sample, power, power_sample_size
from .srm import SrmResult, srm_test
from .winsorize import winsor_cap, winsorize

__all__ = [
    "KINDS",
    "METHODS",
    "AnalysisConfig",
    "BayesianResult",
    "MetricResult",
    "Remaining",
    "SampleSize",
    "SampleStats",
    "SrmResult",
    "analyze_metric",
    "benjamini_hochberg",
    "bonferroni_alpha",
    "ci_alpha",
    "days_remaining",
    "efficacy_bounds",
    "gaussian_posterior",
    "holm",
    "inflation_factor",
    "look_fractions",
    "mde_for_sample",
    "power",
    "power_sample_size",
    "spent_alpha",
    "srm_test",
    "winsor_cap",
    "winsorize",
]
