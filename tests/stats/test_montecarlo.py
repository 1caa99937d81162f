"""stats.montecarlo: seeded chunks give the same replications whatever the number of processes."""

from functools import partial

import numpy as np

from stats.montecarlo import CHUNKS, replicate


def _draws(scale: float, runs: int, seed: np.random.SeedSequence) -> list[float]:
    return list(np.random.default_rng(seed).normal(0, scale, runs))


def test_results_depend_on_the_seed_not_on_the_processes():
    task = partial(_draws, 2.0)
    alone = replicate(task, 37, seed=5, workers=1)
    shared = replicate(task, 37, seed=5, workers=2)
    assert alone == shared
    assert sum(len(part) for part in alone) == 37 and len(alone) == CHUNKS
    assert replicate(task, 37, seed=6, workers=1) != alone


def test_progress_counts_every_run_and_small_runs_use_fewer_chunks():
    seen = []
    parts = replicate(
        partial(_draws, 1.0), 3, seed=1, workers=2, progress=lambda d, t: seen.append((d, t))
    )
    assert [len(p) for p in parts] == [1, 1, 1]
    assert sorted(seen)[-1] == (3, 3) and len(seen) == 3
