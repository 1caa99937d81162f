"""Winsorization cap: the 'linear' quantile of PostgreSQL percentile_cont."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stats import order_statistics_needed, winsor_cap, winsor_cap_from_highest, winsorize


def percentile_cont(values, q):
    """PostgreSQL's documented rule, written out: interpolate between the order statistics
    around position (n - 1) q (0-based)."""
    x = sorted(values)
    h = (len(x) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def test_cap_is_the_interpolated_quantile():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert winsor_cap(values, 0.9) == pytest.approx(61.6)  # 4 + 0.6 * (100 - 4)
    assert list(winsorize(values, 0.9)) == pytest.approx([1, 2, 3, 4, 61.6])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200),
    st.floats(0.5, 1.0),
)
def test_matches_percentile_cont_and_numpy_linear(values, q):
    """References: the percentile_cont rule above and numpy.quantile(method='linear')."""
    cap = winsor_cap(values, q)
    assert cap == pytest.approx(percentile_cont(values, q), rel=1e-12, abs=1e-9)
    assert cap == pytest.approx(float(np.quantile(values, q, method="linear")), rel=1e-12, abs=1e-9)
    capped = winsorize(values, q)
    assert capped.max() <= cap + 1e-9
    assert all(c == v for c, v in zip(capped, values, strict=True) if v <= cap)


def test_quantile_one_changes_nothing_and_empty_input_is_fine():
    assert list(winsorize([3.0, 1.0, 7.0], 1.0)) == [3.0, 1.0, 7.0]
    assert winsor_cap([], 0.99) is None
    assert winsorize([], 0.99).size == 0
    with pytest.raises(ValueError):
        winsor_cap([1.0], 0.0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(-1e3, 1e6, allow_nan=False)), min_size=1, max_size=300
    ),
    st.floats(0.5, 1.0),
)
def test_the_cap_from_the_highest_values_alone_is_the_cap_of_all(values, q):
    """``winsor_cap_from_highest`` given only the ``order_statistics_needed`` highest values
    equals numpy.quantile(method='linear') of all of them (the stored aggregates read only the
    top of each column: analysis/incremental_read.py)."""
    k = order_statistics_needed(len(values), q)
    highest = sorted(values, reverse=True)[:k]
    expected = float(np.quantile(values, q, method="linear"))
    assert winsor_cap_from_highest(highest, len(values), q) == pytest.approx(
        expected, rel=1e-12, abs=1e-9
    )
    assert order_statistics_needed(0, q) == 0 and winsor_cap_from_highest([], 0, q) is None
