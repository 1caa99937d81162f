"""Quantile differences (release-health p50/p95/p99) against independent references.

References: numpy.quantile(method="linear") and the percentile_cont rule written out for the
estimate; Woodruff's band written out with scipy.stats.norm for the standard error; Price &
Bonett's (2002) order-statistic SE of a median, transcribed and checked on the published
example of Bonett's statpsych ``ci.median2``; a nonparametric bootstrap of the difference on
unit-level data; and seeded Monte Carlo simulations for coverage (true quantiles from
scipy.stats.lognorm.ppf).
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from stats import (
    quantile_difference,
    quantile_difference_from_histograms,
    quantile_harm_bound,
)
from stats.quantiles import WOODRUFF_Z, arm_quantile, histogram_quantile_bracket

SIGMA = 1.0  # lognormal latencies: median exp(5) = 148 ms, p99 about 1,520 ms
MU = 5.0


def latencies(rng, n, scale=1.0, sigma=SIGMA):
    return scale * rng.lognormal(MU, sigma, n)


def percentile_cont(x, p):
    """PostgreSQL's rule written out: interpolate around 0-based position (n - 1) p."""
    x = np.sort(x)
    h = (len(x) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def woodruff_se(x, q):
    """Woodruff (1952) written out: the 95% binomial band on the CDF, mapped back."""
    z = sps.norm.ppf(0.975)
    h = z * math.sqrt(q * (1 - q) / len(x))
    return (percentile_cont(x, q + h) - percentile_cont(x, q - h)) / (2 * z)


def price_bonett_median_se(y):
    """Price & Bonett (2002) / Bonett & Price (2002): c = round(n/2 - sqrt(n)),
    se = (y_(n-c+1) - y_(c)) / (2 z), z the normal quantile of P(Bin(n, 1/2) <= c - 1)."""
    y = np.sort(np.asarray(y, dtype=float))
    n = len(y)
    c = max(1, int(np.round(n / 2 - math.sqrt(n))))
    z = sps.norm.ppf(1 - sps.binom.cdf(c - 1, n, 0.5))
    return (y[n - c] - y[c - 1]) / (2 * z)


def bootstrap_se(rng, t, c, q, draws):
    """Nonparametric bootstrap SD of the difference of "linear" quantiles, arms resampled
    independently."""
    bt = np.quantile(t[rng.integers(0, t.size, (draws, t.size))], q, axis=1)
    bc = np.quantile(c[rng.integers(0, c.size, (draws, c.size))], q, axis=1)
    return float(np.std(bt - bc, ddof=1))


# (c) the estimate is numpy's quantile; the SE is Woodruff's band.


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_estimate_is_numpy_linear_quantile_and_se_is_woodruff(q):
    rng = np.random.default_rng(7)
    t, c = latencies(rng, 3001, 1.1), latencies(rng, 2500)
    r = quantile_difference(t, c, q, alpha=0.1)
    qt, qc = np.quantile(t, q, method="linear"), np.quantile(c, q, method="linear")
    assert r.treatment_quantile == pytest.approx(qt, rel=1e-12)
    assert r.control_quantile == pytest.approx(percentile_cont(c, q), rel=1e-12)
    assert r.difference == pytest.approx(qt - qc, rel=1e-12)
    assert r.relative_difference == pytest.approx((qt - qc) / qc, rel=1e-12)
    assert r.treatment_se == pytest.approx(woodruff_se(t, q), rel=1e-10)
    assert r.control_se == pytest.approx(woodruff_se(c, q), rel=1e-10)
    se = math.hypot(woodruff_se(t, q), woodruff_se(c, q))
    z = sps.norm.ppf(0.95)
    assert r.standard_error == pytest.approx(se, rel=1e-10)
    assert (r.lower, r.upper) == pytest.approx((qt - qc - z * se, qt - qc + z * se), rel=1e-10)
    assert (r.n_treatment, r.n_control, r.method) == (3001, 2500, "woodruff")


def test_harm_bound_is_the_one_sided_end():
    rng = np.random.default_rng(8)
    t, c = latencies(rng, 4000, 1.08), latencies(rng, 4000)
    two_sided = quantile_difference(t, c, 0.95, alpha=0.05)
    up = quantile_harm_bound(t, c, 0.95, alpha=0.025)
    down = quantile_harm_bound(t, c, 0.95, alpha=0.025, direction="decrease_is_bad")
    assert up.bound == pytest.approx(two_sided.lower, rel=1e-12)
    assert down.bound == pytest.approx(two_sided.upper, rel=1e-12)
    assert up.harmed == (two_sided.lower > 0) and down.harmed == (two_sided.upper < 0)
    assert up.harmed  # an 8% slower p95 on 4,000 units per arm
    strict = quantile_harm_bound(t, c, 0.95, alpha=0.001)
    assert strict.bound == pytest.approx(
        two_sided.difference - sps.norm.ppf(0.999) * two_sided.standard_error, rel=1e-12
    )


def test_price_bonett_reference_and_median_agreement():
    """The transcription reproduces statpsych ci.median2's published SE (4.494993); on large
    samples our median SE agrees with Price & Bonett's within 5%."""
    y1 = [32.1, 39.8, 26.3, 35.0, 43.1, 27.0, 40.9, 37.4, 34.0, 29.2]
    y2 = [36.8, 44.0, 47.1, 42.7, 49.0, 39.6, 46.2, 31.6, 33.1, 48.4]
    assert math.hypot(price_bonett_median_se(y1), price_bonett_median_se(y2)) == pytest.approx(
        4.494993, abs=1e-6
    )
    rng = np.random.default_rng(9)
    for n in (2000, 10000):
        x = latencies(rng, n)
        assert arm_quantile(x, 0.5).se == pytest.approx(price_bonett_median_se(x), rel=0.05)


# (a) against a bootstrap on unit-level data.


@pytest.mark.parametrize(("q", "n"), [(0.5, 2000), (0.95, 5000), (0.99, 10000)])
def test_se_agrees_with_bootstrap(q, n):
    rng = np.random.default_rng(int(q * 1000) + n)
    t, c = latencies(rng, n, 1.05), latencies(rng, n)
    r = quantile_difference(t, c, q)
    assert r.standard_error == pytest.approx(bootstrap_se(rng, t, c, q, 400), rel=0.15)


@pytest.mark.slow
def test_se_agrees_with_bootstrap_grid():
    """q x n with at least 50 units beyond the quantile, 1,000 bootstrap draws, lognormal
    sigma 1 and a heavier sigma 1.5, latencies rounded to whole ms (ties): each within 15%,
    their mean ratio within 5%. (With fewer in the tail the SE is conservative: see below.)"""
    rng = np.random.default_rng(2024)
    ratios = []
    for sigma in (1.0, 1.5):
        for q in (0.5, 0.95, 0.99):
            for n in (2000, 5000, 20000) if q < 0.99 else (5000, 20000):
                t = np.round(latencies(rng, n, 1.0, sigma))
                c = np.round(latencies(rng, n, 1.0, sigma))
                r = quantile_difference(t, c, q)
                ratio = r.standard_error / bootstrap_se(rng, t, c, q, 1000)
                assert ratio == pytest.approx(1.0, abs=0.15), (sigma, q, n)
                ratios.append(ratio)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)


# Event-level values clustered in units: against a bootstrap of units.


def clustered_latencies(rng, units, per_unit, scale=1.0):
    """Events of the same unit alike: log latency = MU + unit effect + event noise (sd 0.7
    each), ``per_unit`` events per unit, as a (units, per_unit) array."""
    unit = rng.normal(0.0, 0.7, (units, 1))
    return scale * np.exp(MU + unit + rng.normal(0.0, 0.7, (units, per_unit)))


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_clustered_events_agree_with_a_unit_bootstrap(q):
    """Reference: resampling whole units (rows). The event-level iid SE is too small here;
    with unit ids the SE is within 15% of the unit bootstrap."""
    rng = np.random.default_rng(16 + int(100 * q))
    t, c = clustered_latencies(rng, 3000, 5, 1.05), clustered_latencies(rng, 3000, 5)
    ids = np.repeat(np.arange(3000), 5)
    clustered = quantile_difference(t.ravel(), c.ravel(), q, treatment_units=ids, control_units=ids)
    draws = 300
    bt = np.quantile(t[rng.integers(0, 3000, (draws, 3000))].reshape(draws, -1), q, axis=1)
    bc = np.quantile(c[rng.integers(0, 3000, (draws, 3000))].reshape(draws, -1), q, axis=1)
    reference = float(np.std(bt - bc, ddof=1))
    assert clustered.standard_error == pytest.approx(reference, rel=0.15)
    assert quantile_difference(t.ravel(), c.ravel(), q).standard_error < 0.85 * reference
    assert clustered.difference == quantile_difference(t.ravel(), c.ravel(), q).difference
    harm = quantile_harm_bound(
        t.ravel(), c.ravel(), q, alpha=0.025, treatment_units=ids, control_units=ids
    )
    assert harm.bound == pytest.approx(clustered.lower, rel=1e-12)


def test_one_event_per_unit_is_the_unit_level_se():
    rng = np.random.default_rng(17)
    t, c = latencies(rng, 3000), latencies(rng, 2000)
    plain = quantile_difference(t, c, 0.95)
    ids = quantile_difference(
        t, c, 0.95, treatment_units=np.arange(3000), control_units=np.arange(2000) + 7
    )
    assert ids.standard_error == pytest.approx(plain.standard_error, rel=0.01)


@pytest.mark.slow
def test_clustered_coverage():
    """1,000 replications, 2,000 units per arm with 1-9 events each, no effect: coverage of the
    p95 difference (0) in [0.93, 0.97]."""
    rng = np.random.default_rng(18)
    covered = 0
    for _ in range(REPS):
        arms = []
        for _arm in range(2):
            counts = rng.integers(1, 10, 2000)
            ids = np.repeat(np.arange(2000), counts)
            unit = rng.normal(0.0, 0.7, 2000)[ids]
            arms.append((np.exp(MU + unit + rng.normal(0.0, 0.7, ids.size)), ids))
        (t, ti), (c, ci) = arms
        r = quantile_difference(t, c, 0.95, treatment_units=ti, control_units=ci)
        covered += r.lower <= 0 <= r.upper
    assert 0.93 <= covered / REPS <= 0.97


# (b) coverage by simulation.

REPS = 1000


def simulate(q, n, scale, reps=REPS, sigma=SIGMA, seed=0, alpha=0.05):
    """Coverage of the true difference, SD of the estimates and the mean SE."""
    rng = np.random.default_rng(seed)
    truth = (scale - 1.0) * sps.lognorm.ppf(q, sigma, scale=math.exp(MU))
    covered, diffs, ses = 0, [], []
    for _ in range(reps):
        t, c = latencies(rng, n, scale, sigma), latencies(rng, n, 1.0, sigma)
        r = quantile_difference(t, c, q, alpha=alpha)
        covered += r.lower <= truth <= r.upper
        diffs.append(r.difference)
        ses.append(r.standard_error)
    return covered / reps, float(np.std(diffs, ddof=1)), float(np.mean(ses))


@pytest.mark.parametrize(("q", "n"), [(0.5, 2000), (0.95, 2000), (0.99, 5000)])
@pytest.mark.parametrize("scale", [1.0, 1.1])
def test_coverage_under_h0_and_a_shift(q, n, scale):
    """1,000 replications, at least 50 units beyond the quantile: coverage in [0.93, 0.97]
    (0.95 -/+ 2.9 Monte Carlo SE), and the mean SE within 10% of the simulated SD of the
    difference."""
    coverage, sd, mean_se = simulate(q, n, scale, seed=int(1000 * q + 100 * scale))
    assert 0.93 <= coverage <= 0.97
    assert mean_se == pytest.approx(sd, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize(("q", "n"), [(0.5, 20000), (0.95, 20000), (0.99, 5000), (0.99, 20000)])
def test_coverage_heavy_tail_and_sizes(q, n):
    """Heavier tail (sigma 1.5), a 20% slowdown, 2,000 replications."""
    coverage, sd, mean_se = simulate(q, n, 1.2, reps=2000, sigma=1.5, seed=n + int(100 * q))
    assert 0.93 <= coverage <= 0.97
    assert mean_se == pytest.approx(sd, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize(("q", "n"), [(0.99, 1000), (0.99, 2000), (0.95, 200)])
@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_few_in_the_tail_is_conservative_not_liberal(q, n, sigma):
    """10-20 units beyond the quantile (the minimum is 10): Woodruff's band then spans a
    curved stretch of the quantile function and overstates the SE (measured +9% to +34%),
    so coverage is above nominal, never below."""
    coverage, sd, mean_se = simulate(q, n, 1.1, reps=2000, sigma=sigma, seed=n + int(10 * sigma))
    assert 0.945 <= coverage <= 0.99
    assert 1.0 <= mean_se / sd <= 1.45


def test_harm_bound_false_alarm_rate_under_h0():
    """One-sided at alpha 0.025, no effect: harm is declared at most 2.5% + 3 MC SE."""
    rng = np.random.default_rng(11)
    alarms = sum(
        quantile_harm_bound(latencies(rng, 2000), latencies(rng, 2000), 0.95, alpha=0.025).harmed
        for _ in range(REPS)
    )
    assert alarms / REPS <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / REPS)


# (d) histograms (log-spaced bins) against the unit-level values.

EDGES = np.concatenate([[0.0], np.geomspace(1.0, 1e6, 709)])  # 2% wide bins above 1 ms


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_histogram_agrees_within_bin_width(q):
    rng = np.random.default_rng(12 + int(100 * q))
    t, c = latencies(rng, 20000, 1.1), latencies(rng, 15000)
    ht, hc = np.histogram(t, EDGES)[0], np.histogram(c, EDGES)[0]
    unit = quantile_difference(t, c, q)
    hist = quantile_difference_from_histograms(EDGES, ht, hc, q)
    assert hist.method == "woodruff-histogram" and hist.n_treatment == 20000
    bounds = {}
    for arm, x, h in (("t", t, ht), ("c", c, hc)):
        low, high = histogram_quantile_bracket(EDGES, h, q)
        est = hist.treatment_quantile if arm == "t" else hist.control_quantile
        assert low <= np.quantile(x, q) <= high and low <= est <= high
        assert high / low - 1 <= 0.041  # one or two 2% bins
        hw = WOODRUFF_Z * math.sqrt(q * (1 - q) / x.size)
        band = [histogram_quantile_bracket(EDGES, h, p) for p in (q - hw, q + hw)]
        se_bound = sum(b - a for a, b in band) / (2 * WOODRUFF_Z)
        unit_se = unit.treatment_se if arm == "t" else unit.control_se
        hist_se = hist.treatment_se if arm == "t" else hist.control_se
        assert abs(hist_se - unit_se) <= se_bound
        bounds[arm] = (high - low, se_bound)
    diff_bound = bounds["t"][0] + bounds["c"][0]
    assert abs(hist.difference - unit.difference) <= diff_bound
    z_bound = diff_bound + sps.norm.ppf(0.975) * (bounds["t"][1] + bounds["c"][1])
    assert abs(hist.lower - unit.lower) <= z_bound and abs(hist.upper - unit.upper) <= z_bound
    # In practice far inside the worst case (measured: ends within 3% of the interval's width,
    # SE within 4%): the ogive smooths the band's ends rather than moving them a bin away.
    width = unit.upper - unit.lower
    assert hist.lower == pytest.approx(unit.lower, abs=0.05 * width)
    assert hist.upper == pytest.approx(unit.upper, abs=0.05 * width)
    assert hist.standard_error == pytest.approx(unit.standard_error, rel=0.05)


def test_histogram_bin_arithmetic():
    """By hand: 100 units, 10 per bin of width 10 from 0 to 100; the median's ogive is 50."""
    edges, counts = np.arange(0, 101, 10), np.full(10, 10)
    r = quantile_difference_from_histograms(edges, counts, counts, 0.5)
    assert r.treatment_quantile == pytest.approx(50.0) and r.difference == 0.0
    h = WOODRUFF_Z * math.sqrt(0.25 / 100)
    assert r.treatment_se == pytest.approx(100 * 2 * h / (2 * WOODRUFF_Z))  # CDF slope 1/100


# (e) errors.


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_q_is_refused(q):
    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match="q must be"):
        quantile_difference(latencies(rng, 500), latencies(rng, 500), q)


@pytest.mark.parametrize(
    ("q", "n", "need"), [(0.5, 19, 20), (0.99, 999, 1000), (0.999, 5000, 10000), (0.01, 500, 1000)]
)
def test_too_few_values_are_refused(q, n, need):
    rng = np.random.default_rng(14)
    with pytest.raises(ValueError, match=f"too few values in treatment .* need at least {need}"):
        quantile_difference(latencies(rng, n), latencies(rng, 50000), q)
    assert quantile_difference(latencies(rng, need), latencies(rng, need), q).standard_error > 0


def test_other_bad_inputs():
    rng = np.random.default_rng(15)
    x = latencies(rng, 1000)
    with pytest.raises(ValueError, match="tied"):
        quantile_difference(np.r_[np.full(900, 100.0), x[:100]], x, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        quantile_difference(x, np.r_[x[:-1], np.nan], 0.5)
    with pytest.raises(ValueError, match="999 unit ids for 1000 values"):
        quantile_difference(x, x, 0.5, treatment_units=np.arange(999))
    with pytest.raises(ValueError, match="too few units in control: 10"):
        quantile_difference(x, x, 0.5, control_units=np.arange(1000) % 10)
    with pytest.raises(ValueError, match="alpha"):
        quantile_difference(x, x, 0.5, alpha=0.0)
    with pytest.raises(ValueError, match="direction"):
        quantile_harm_bound(x, x, 0.5, alpha=0.05, direction="up")
    edges = np.arange(0, 101, 10)
    with pytest.raises(ValueError, match="9 counts for 10 bins"):
        quantile_difference_from_histograms(edges, np.ones(9), np.ones(10), 0.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        quantile_difference_from_histograms(edges[::-1], np.ones(10), np.ones(10), 0.5)
    with pytest.raises(ValueError, match="too few values in control"):
        quantile_difference_from_histograms(edges, np.full(10, 10), np.ones(10), 0.5)
    assert quantile_difference(x - np.quantile(x, 0.5), x, 0.5).relative_difference is not None
    zero = quantile_difference(x, np.r_[-x[:500], 0.0, x[500:]], 0.5)  # control median 0
    assert zero.relative_difference is None
