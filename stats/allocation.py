"""Sample size and MDE of an experiment with several arms at unequal weights.

Each treatment arm is compared with the control, at the alpha the caller gives (the Bonferroni
share). With weights w_i (W = sum w_i), the control has N w_c / W of a total N, so the pair of
treatment i needs N >= n_c(r_i) W / w_c, r_i = w_i / w_c; the pair that needs the most decides N,
and every arm gets N w_i / W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .power_problem import PIPELINE_LOOKS, InvalidInput
from .sample_size import mde_for_sample, pair_sample_size


@dataclass(frozen=True)
class AllocationSize:
    arms_exact: tuple[float, ...]  # units per arm at the weights, in the order given
    arms: tuple[int, ...]  # each rounded up
    total: int  # sum of ``arms``: the planned sample size of the experiment
    inflation: float  # over the fixed design (1 for "fixed")
    deciding: int  # index of the treatment arm whose comparison needs the most units


def _check_weights(weights: Sequence[float], control: int) -> tuple[float, ...]:
    values = tuple(float(w) for w in weights)
    if len(values) < 2:
        raise InvalidInput("weights", "give at least two weights: a control and a treatment")
    if not all(math.isfinite(w) and w > 0 for w in values):
        raise InvalidInput("weights", "every weight must be positive")
    if not 0 <= control < len(values):
        raise InvalidInput(
            "control", f"control must be an index of the weights (0 to {len(values) - 1})"
        )
    return values


def _deciding_pair(
    values: tuple[float, ...], control: int, tuning_n: float | None, pair_args: dict[str, Any]
) -> tuple[float, int, float]:
    """The total N, index and inflation of the treatment arm whose comparison with the control
    needs the most units; each pair's confidence sequence is tuned at its share of ``tuning_n``."""
    whole, w_c = sum(values), values[control]
    best: tuple[float, int, float] | None = None
    for i, w in enumerate(values):
        if i == control:
            continue
        share = None if tuning_n is None else tuning_n * (w_c + w) / whole
        pair = pair_sample_size(ratio=w / w_c, tuning_n=share, **pair_args)
        total = pair.control_exact * whole / w_c
        if best is None or total > best[0]:
            best = (total, i, pair.inflation)
    assert best is not None
    return best


def allocation_sample_size(
    *,
    weights: Sequence[float],
    control: int = 0,
    mde: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    kind: str = "mean",
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    design: str = "fixed",
    looks: int | Sequence[float] = PIPELINE_LOOKS,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    tuning_n: float | None = None,
) -> AllocationSize:
    """Units per arm and in total when the arms get traffic in proportion to ``weights``
    (any positive numbers; ``control`` is the index of the control arm) and each treatment is
    compared with the control at ``alpha`` (pass the Bonferroni share). The pair that needs the
    most units decides the total N; arm i gets N w_i / sum(w), rounded up. ``tuning_n`` is the
    total for the experiment: each pair's confidence sequence is tuned at its share of it."""
    values = _check_weights(weights, control)
    pair_args = dict(
        mde=mde,
        baseline_mean=baseline_mean,
        baseline_variance=baseline_variance,
        kind=kind,
        alpha=alpha,
        power=power,
        relative=relative,
        design=design,
        looks=looks,
        spending=spending,
        rho=rho,
    )
    total_exact, deciding, inflation = _deciding_pair(values, control, tuning_n, pair_args)
    whole = sum(values)
    exact = tuple(total_exact * w / whole for w in values)
    arms = tuple(math.ceil(x - 1e-9) for x in exact)
    return AllocationSize(exact, arms, sum(arms), inflation, deciding)


def allocation_mde(
    *,
    total: float,
    weights: Sequence[float],
    control: int = 0,
    **kwargs: object,
) -> float:
    """The MDE a total of ``total`` units split by ``weights`` detects in every comparison with
    the control: the largest of the pairs' MDEs (``kwargs`` as for ``mde_for_sample``)."""
    values = _check_weights(weights, control)
    whole, w_c = sum(values), values[control]
    if not total > 0:
        raise InvalidInput("n_per_arm", "the sample size must be positive")
    return max(
        mde_for_sample(n_per_arm=total * w_c / whole, ratio=w / w_c, **kwargs)  # type: ignore[arg-type]
        for i, w in enumerate(values)
        if i != control
    )
