"""Independent Monte Carlo replications split into seeded chunks and run on the machine's cores.

The runs are cut into ``CHUNKS`` shares, each with its own child of ``SeedSequence(seed)``
(numpy's recommended way to seed parallel streams: the children's streams are independent), so
the results depend on the seed and the number of runs, never on how many processes ran them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

import numpy as np

CHUNKS = 8
T = TypeVar("T")


def replicate(
    task: Callable[[int, np.random.SeedSequence], T],
    runs: int,
    seed: int,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[T]:
    """``task(n, seed_sequence)`` for each chunk of ``runs``, results in chunk order.

    ``task`` must be a module-level function (or a ``functools.partial`` of one) when it runs in
    processes. ``workers``: processes to use (default: the cores, at most the chunks; 1 runs
    in this process). ``progress(done, runs)`` is called as chunks finish."""
    sizes = [runs // CHUNKS + (i < runs % CHUNKS) for i in range(CHUNKS)]
    seeds = np.random.SeedSequence(seed).spawn(CHUNKS)
    jobs = [(n, s) for n, s in zip(sizes, seeds, strict=True) if n]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    results: list[T | None] = [None] * len(jobs)
    done = 0
    if workers <= 1:
        for i, (n, s) in enumerate(jobs):
            results[i] = task(n, s)
            done += n
            if progress:
                progress(done, runs)
        return results  # type: ignore[return-value]
    # fork: the children start with the parent's imports (no re-import of Django or scipy).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(task, n, s): i for i, (n, s) in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            done += jobs[i][0]
            if progress:
                progress(done, runs)
    return results  # type: ignore[return-value]
