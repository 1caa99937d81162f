"""Sample ratio mismatch against scipy.stats.chisquare and gbstats.utils.check_srm."""

import pytest
from gbstats.utils import check_srm
from scipy import stats

from analysis.stats import srm_test


def test_matches_scipy_chisquare_with_expected_counts_from_weights():
    """Reference: scipy.stats.chisquare([5050, 4840, 10110], f_exp = N x weights)."""
    observed, weights = [5050, 4840, 10110], [0.25, 0.25, 0.5]
    total = sum(observed)
    ref = stats.chisquare(observed, [total * w for w in weights])
    result = srm_test(observed, weights)
    assert result.chi2 == pytest.approx(ref.statistic, abs=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, abs=1e-9)
    assert result.flagged == (ref.pvalue < 0.001)


def test_matches_gbstats_check_srm_with_unnormalised_weights():
    """Reference: gbstats check_srm([1000, 1100], [1, 1])."""
    result = srm_test([1000, 1100], [1, 1])
    assert result.p_value == pytest.approx(check_srm([1000, 1100], [1, 1]), abs=1e-9)


def test_flags_a_clear_mismatch():
    result = srm_test([10000, 10600], [0.5, 0.5])
    assert result.flagged and result.p_value < 0.001 and "mismatch" in result.message


def test_balanced_split_is_not_flagged():
    result = srm_test([10000, 10050], [0.5, 0.5])
    assert not result.flagged and result.p_value > 0.5 and result.message is None


def test_not_judged_before_every_arm_has_the_minimum_count():
    result = srm_test([15, 60], [0.5, 0.5], min_count=20)
    assert result.p_value < 0.001 and not result.flagged
    assert "fewer than 20" in result.message


def test_units_in_a_zero_weight_arm_are_a_mismatch():
    result = srm_test([500, 500, 3], [0.5, 0.5, 0.0])
    assert result.flagged and result.p_value == 0.0
    assert "zero-weight" in result.message


def test_empty_zero_weight_arm_is_ignored():
    with_empty = srm_test([500, 530, 0], [0.5, 0.5, 0.0])
    assert with_empty.p_value == pytest.approx(srm_test([500, 530], [0.5, 0.5]).p_value)


def test_no_units_and_single_arm_give_a_clear_answer():
    assert srm_test([0, 0], [0.5, 0.5]).p_value == 1.0
    single = srm_test([100], [1.0])
    assert single.p_value is None and not single.flagged and single.message
