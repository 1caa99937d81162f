"""Alpha-spending functions and the information fractions of the looks to evaluate.

Lan & DeMets (1983), "Discrete sequential boundaries for clinical trials", Biometrika 70: the
error spent by information fraction t is alpha(t). Spending functions, for a two-sided symmetric
test at level alpha (each side alpha / 2):
- "obrien_fleming" (Lan-DeMets O'Brien-Fleming type), per side
  alpha_1(t) = 2 - 2 Phi(z_{1 - alpha_1 / 2} / sqrt(t)) with alpha_1 = alpha / 2;
  this is the convention of gsDesign ``sfLDOF`` and of the published table
  (5 equal looks, alpha 0.05: 4.877, 3.357, 2.680, 2.290, 2.031);
- "power" (Kim & DeMets 1987 / Jennison & Turnbull section 7.2.1): alpha(t) = alpha t^rho.
One-sided designs (``two_sided=False``) spend alpha on the upper side only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import special

SPENDING_FUNCTIONS = ("obrien_fleming", "power")


def spent_alpha(
    t: float,
    alpha: float,
    spending: str = "obrien_fleming",
    rho: float = 2.0,
    two_sided: bool = True,
) -> float:
    """Cumulative type I error alpha(t) allowed by information fraction t (capped at 1)."""
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"unknown spending {spending!r}; expected one of {SPENDING_FUNCTIONS}")
    t = min(max(t, 0.0), 1.0)
    if t <= 0.0:
        return 0.0
    if spending == "power":
        return alpha * t**rho
    side_alpha = alpha / 2.0 if two_sided else alpha
    per_side = 2.0 * float(special.ndtr(special.ndtri(side_alpha / 2.0) / math.sqrt(t)))
    return 2.0 * per_side if two_sided else per_side


def check_design(alpha: float, spending: str) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"unknown spending {spending!r}; expected one of {SPENDING_FUNCTIONS}")


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in fractions)
    if (
        not out
        or not all(math.isfinite(t) for t in out)
        or out[0] <= 0
        or any(b <= a for a, b in zip(out, out[1:], strict=False))
    ):
        raise ValueError(f"information fractions must be positive and increasing, got {out}")
    return out


def look_fractions(previous: Sequence[float], current: float) -> tuple[float, ...]:
    """The looks to evaluate at a look with information fraction ``current``.

    Earlier looks at or beyond the current fraction (a repeated look at the same data) and
    non-positive ones are dropped. Once the planned sample is reached (fraction >= 1), the
    current look is the final analysis: earlier looks at fraction >= 1 are dropped, so the
    remaining alpha is spent here instead of leaving later looks with nothing to spend.
    """
    if current <= 0:
        raise ValueError(f"current information fraction must be positive, got {current}")
    earlier = sorted({float(t) for t in previous if 0 < t < current - 1e-12})
    if current >= 1:
        earlier = [t for t in earlier if t < 1]
    return (*earlier, float(current))
