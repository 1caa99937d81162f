"""Multiple-testing corrections against statsmodels.stats.multitest.multipletests."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from stats import benjamini_hochberg, bonferroni_alpha, ci_alpha, holm

PVALUES = [0.001, 0.04, 0.03, 0.2, 0.0125, 0.5, 0.049]


@pytest.mark.parametrize(("ours", "method"), [(holm, "holm"), (benjamini_hochberg, "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(ours, method):
    """Reference: multipletests(PVALUES, method='holm' / 'fdr_bh')[1]."""
    assert ours(PVALUES) == pytest.approx(list(multipletests(PVALUES, method=method)[1]), abs=1e-12)


@pytest.mark.slow  # a property test: the whole suite and CI run it, test-fast does not
@settings(max_examples=12, deadline=None)  # multipletests itself takes ~20 ms a call
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_adjusted_p_values_match_statsmodels_for_any_input(pvalues):
    for ours, method in ((holm, "holm"), (benjamini_hochberg, "fdr_bh")):
        ref = multipletests(np.array(pvalues), method=method)[1]
        assert ours(pvalues) == pytest.approx(list(ref), abs=1e-12)


def test_missing_p_values_are_left_out_of_the_family():
    adjusted = holm([0.01, None, 0.04])
    assert adjusted[1] is None
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert benjamini_hochberg([None, None]) == [None, None]


def test_bonferroni_alpha_divides_by_metrics_and_treatment_arms():
    assert bonferroni_alpha(0.05, n_metrics=2, n_arms=3) == pytest.approx(0.05 / 6)
    assert bonferroni_alpha(0.05, 0, 0) == 0.05


def test_ci_alpha_matches_each_correction():
    assert ci_alpha("bonferroni", 0.05, 4) == pytest.approx(0.0125)
    assert ci_alpha("holm", 0.05, 4) == pytest.approx(0.0125)
    assert ci_alpha("benjamini_hochberg", 0.05, 10, n_rejected=3) == pytest.approx(0.015)
    assert ci_alpha("benjamini_hochberg", 0.05, 10, n_rejected=0) == pytest.approx(0.005)
