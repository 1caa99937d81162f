"""Bucketing is bit-compatible with GrowthBook's SDKs and splits traffic as weighted."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from growthbook import core as gb
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bucketing.hashing import (
    Bucketer,
    assign_many,
    bucket_many,
    choose_variant,
    fnv1a32,
    gb_hash,
    gb_hash_many,
    get_bucket_ranges,
    hash_string,
    hash_v2_from_state,
    in_namespace,
    in_namespace_many,
    seed_state,
)

CASES = json.loads((Path(__file__).parent / "growthbook_cases.json").read_text())

# Strings as the SDKs see them: any code point except lone surrogates (not valid in JSON).
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


def _ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


@pytest.mark.parametrize("seed,value,version,expected", CASES["hash"])
def test_hash_matches_published_vectors(seed, value, version, expected):
    """gb_hash reproduces GrowthBook's spec vectors for versions 1 and 2, None otherwise."""
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize("name,args,expected", CASES["getBucketRange"])
def test_bucket_ranges_match_published_vectors(name, args, expected):
    """Ranges follow the SDK, including clamped coverage and invalid weights -> equal weights."""
    num_variants, coverage, weights = args
    ranges = get_bucket_ranges(weights, coverage, num_variants)
    assert [list(r) for r in ranges] == [pytest.approx(r, abs=1e-9) for r in expected]


@pytest.mark.parametrize("name,n,ranges,expected", CASES["chooseVariation"])
def test_choose_variant_matches_published_vectors(name, n, ranges, expected):
    """The first range with start <= n < end wins; none gives -1."""
    assert choose_variant(n, [tuple(r) for r in ranges]) == expected


@pytest.mark.parametrize("name,unit,namespace,expected", CASES["inNamespace"])
def test_in_namespace_matches_published_vectors(name, unit, namespace, expected):
    """Namespace membership uses hash version 1 of "__" + namespace id, like the SDK."""
    assert in_namespace(unit, tuple(namespace)) is expected


@settings(max_examples=400, deadline=None)
@given(seed=texts, value=texts)
def test_hash_equals_sdk_for_any_string(seed, value):
    """Both versions agree with the SDK on arbitrary Unicode (UTF-16 code units, like JS)."""
    assert gb_hash(seed, value, 2) == gb.gbhash(seed, value, 2)
    assert gb_hash(seed, value, 1) == gb.gbhash(seed, value, 1)
    assert hash_v2_from_state(seed_state(seed), value) == gb.gbhash(seed, value, 2)
    assert fnv1a32(value, fnv1a32(seed)) == gb.fnv1a32(seed + value)


def test_long_ids_hash_like_sdk():
    """Ids longer than the unmasked fast path still hash exactly."""
    for value in ["x" * 49, "u" * 500, "ü" * 70, "a😀" * 40]:
        assert gb_hash("seed", value, 2) == gb.gbhash("seed", value, 2)


@pytest.mark.parametrize(
    "value", [123, 1.5, -7, 1e21, 2**60, 0.1, 0, 0.0, True, False, None, "", "id", float("nan")]
)
def test_hash_string_formats_attribute_values_like_sdk(value):
    """Numbers hash as JS String(n); empty, zero, boolean and missing values do not hash."""
    expected = gb._hash_string(value) if gb._is_hashable(value) else ""
    assert hash_string(value) == expected


def test_bucketer_equals_reference_composition():
    """The precomputed hot path equals choose_variant(gb_hash(...), get_bucket_ranges(...))."""
    weights, coverage = [0.2, 0.3, 0.5], 0.7
    bucketer = Bucketer("exp-seed", weights, coverage)
    ranges = get_bucket_ranges(weights, coverage)
    for unit in _ids(5000) + ["", "ü-unit", "😀", "x" * 80]:
        expected = gb.chooseVariation(
            gb.gbhash("exp-seed", unit, 2), gb.getBucketRanges(3, coverage, weights)
        )
        assert bucketer.variant_index(unit) == choose_variant(gb_hash("exp-seed", unit), ranges)
        assert bucketer.variant_index(unit) == expected
        assert bucketer.bucket(unit) == gb.gbhash("exp-seed", unit, 2)


def test_vectorised_hash_equals_scalar():
    """The numpy path gives the same buckets, namespaces and variants as the scalar one."""
    ids = _ids(3000) + ["", "a", "ü-unit", "日本語" * 20, "tab\tnull\x00end", "4294967295"]
    assert gb_hash_many("s", ids, 2).tolist() == [gb_hash("s", u, 2) for u in ids]
    assert gb_hash_many("s", ids, 1).tolist() == [gb_hash("s", u, 1) for u in ids]
    ns = ("layer", 0.25, 0.6)
    assert in_namespace_many(ids, ns).tolist() == [in_namespace(u, ns) for u in ids]
    bucketer = Bucketer("s", [0.5, 0.25, 0.25], 0.8)
    assert bucketer.assign_many(ids).tolist() == [bucketer.variant_index(u) for u in ids]
    # Characters outside the BMP take the scalar fallback.
    astral = ["a😀", "plain"]
    assert bucket_many("s", astral).tolist() == [gb_hash("s", u) for u in astral]


def test_raising_coverage_never_moves_a_unit():
    """A unit in the experiment at a lower coverage keeps its variant at every higher one."""
    ids = _ids(20000, seed=1)
    weights = [0.1, 0.6, 0.3]
    previous = assign_many("ramp", ids, weights, 0.01)
    for coverage in (0.05, 0.2, 0.5, 0.99, 1.0):
        current = assign_many("ramp", ids, weights, coverage)
        was_in = previous >= 0
        assert np.array_equal(current[was_in], previous[was_in])
        assert (current >= 0).sum() >= was_in.sum()
        previous = current
    assert (previous >= 0).all()


@pytest.mark.slow  # seconds, not milliseconds: the whole suite and CI run it, test-fast does not
def test_million_units_split_matches_weights():
    """Chi-square goodness of fit: 1,000,000 ids land in variants in proportion to the weights,
    and buckets are uniform over [0, 1)."""
    ids = _ids(1_000_000, seed=2)
    weights = np.array([0.2, 0.3, 0.5])
    buckets = bucket_many("uniformity", ids)
    variants = choose_variant_many_counts(buckets, weights)
    assert variants.sum() == len(ids)
    assert stats.chisquare(variants, weights * len(ids)).pvalue > 1e-3
    deciles = np.bincount((buckets * 10).astype(int), minlength=10)
    assert stats.chisquare(deciles).pvalue > 1e-3
    # Each of the 10,000 buckets is reachable and none is favoured.
    per_bucket = np.bincount(np.rint(buckets * 10000).astype(int), minlength=10000)
    assert stats.chisquare(per_bucket).pvalue > 1e-3


def choose_variant_many_counts(buckets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    edges = np.concatenate([[0], np.cumsum(weights)])
    return np.histogram(buckets, bins=edges)[0]


def test_experiments_with_different_seeds_are_independent():
    """Chi-square on the 2x2 table of two 50/50 experiments: one's arm says nothing about the
    other's."""
    ids = _ids(400_000, seed=3)
    first = assign_many("checkout-v2", ids, [0.5, 0.5])
    second = assign_many("search-ranking", ids, [0.5, 0.5])
    table = np.array(
        [[np.sum((first == a) & (second == b)) for b in (0, 1)] for a in (0, 1)], dtype=float
    )
    assert table.sum() == len(ids)
    assert stats.chi2_contingency(table, correction=False).pvalue > 1e-3


def test_namespaces_split_units_exclusively():
    """Disjoint slices of one namespace share no unit; together they cover everyone."""
    ids = _ids(20000, seed=4)
    left = in_namespace_many(ids, ("layer", 0, 0.5))
    right = in_namespace_many(ids, ("layer", 0.5, 1))
    assert not (left & right).any()
    assert (left | right).all()
    assert abs(left.mean() - 0.5) < 0.02
