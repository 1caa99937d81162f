"""Group-sequential designs: Lan-DeMets alpha spending over the looks actually taken.

The public face of the design; each part lives in a module of its own:
- ``gs_spending``: the spending functions alpha(t) and the looks to evaluate;
- ``gs_recursion``: the Armitage-McPherson-Rowe recursion for first-crossing probabilities;
- ``gs_bounds``: efficacy bounds, crossing probabilities and the sample-size inflation factor;
- ``gs_repeated``: repeated p-values, consistent with the bounds.

Lan & DeMets (1983), "Discrete sequential boundaries for clinical trials", Biometrika 70: the
error spent by information fraction t is alpha(t); at each look the bound is chosen so that
P(first crossing at this look | H0) = alpha(t_k) - alpha(t_{k-1}), under the canonical joint
normal distribution of the look statistics (Jennison & Turnbull 2000, "Group Sequential Methods
with Applications to Clinical Trials", section 3.1 and chapter 19).
"""

from .gs_bounds import crossing_probabilities, efficacy_bounds, inflation_factor
from .gs_repeated import repeated_p_value
from .gs_spending import SPENDING_FUNCTIONS, look_fractions, spent_alpha

__all__ = [
    "SPENDING_FUNCTIONS",
    "crossing_probabilities",
    "efficacy_bounds",
    "inflation_factor",
    "look_fractions",
    "repeated_p_value",
    "spent_alpha",
]
