"""The holdout comparison's verdicts under its peeking: a simulation (numpy only, no database)
of A/A holdouts looked at hundreds of times as they grow."""

import numpy as np

from analysis.holdouts import ALPHA, TUNING_N
from stats import sequential
from stats.fixed import two_sided_p


def test_an_aa_holdout_looked_at_every_hour_for_months_is_rarely_called_different():
    """The verdicts hold their error rate under the holdout's peeking: 4,000 simulated A/A
    holdouts (10% conversion in both arms), each looked at 200 times as it grows from 200 to
    40,000 units, with the comparison's confidence sequence on the difference (tuned at
    TUNING_N, alpha 5%): the share ever called better or worse is at most 5% (plus 4 Monte
    Carlo standard errors). Peeking at the fixed-horizon test instead, as a reference, calls
    far more of them different (the reason for always-valid intervals)."""
    rng = np.random.default_rng(20270101)
    looks, batch, sims, rate = 200, 100, 4000, 0.10
    n = batch * np.arange(1, looks + 1, dtype=float)  # units per arm at each look
    hits = naive = 0
    for _ in range(sims // 1000):
        c = rng.binomial(batch, rate, size=(1000, looks)).cumsum(axis=1) / n
        t = rng.binomial(batch, rate, size=(1000, looks)).cumsum(axis=1) / n
        var = np.maximum((c * (1 - c) + t * (1 - t)) / n, 1e-12)
        p = sequential.p_value(t - c, var, 2 * n, ALPHA, TUNING_N)
        hits += int((p < ALPHA).any(axis=1).sum())
        naive += int((two_sided_p((t - c) / np.sqrt(var), 2 * n - 2) < ALPHA).any(axis=1).sum())
    share = hits / sims
    assert share <= ALPHA + 4 * np.sqrt(ALPHA * (1 - ALPHA) / sims), share
    assert naive / sims > 0.3
