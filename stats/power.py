"""Planning an experiment: sample size, minimum detectable effect and duration.

The public face of the planning functions; each part lives in a module of its own:
- ``power_problem``: the power of one comparison (control against one treatment arm at
  allocation ratio r = n_t / n_c), the checks of its inputs and the group-sequential inflation;
- ``sample_size``: units and MDE of one comparison, for the "fixed", "group_sequential" and
  "sequential" designs;
- ``allocation``: several arms at unequal weights, each compared with the control;
- ``duration``: the days a sample takes, at constant coverage, along a ramp plan, or at the
  traffic seen so far.
"""

from .allocation import AllocationSize, allocation_mde, allocation_sample_size
from .duration import Remaining, days_for_sample, days_remaining
from .power_problem import DESIGNS, LOOK_STEP, PIPELINE_LOOKS, InvalidInput, gs_inflation
from .sample_size import (
    PairSize,
    SampleSize,
    mde_for_sample,
    pair_sample_size,
    power,
    power_sample_size,
)

__all__ = [
    "DESIGNS",
    "LOOK_STEP",
    "PIPELINE_LOOKS",
    "AllocationSize",
    "InvalidInput",
    "PairSize",
    "Remaining",
    "SampleSize",
    "allocation_mde",
    "allocation_sample_size",
    "days_for_sample",
    "days_remaining",
    "gs_inflation",
    "mde_for_sample",
    "pair_sample_size",
    "power",
    "power_sample_size",
]
