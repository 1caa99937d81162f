"""A project holdout: a share of units kept out of every experiment and rollout (pure).

A unit is in the holdout when its hash with the holdout's own seed (GrowthBook hash v2, like
every rule) falls below the share: ``gb_hash(seed, unit, 2) < share``. The seed is the holdout's
own, so membership is independent of every experiment's and flag's bucketing.

The GrowthBook payload expresses the holdout as a rule ``filter`` (GrowthBook SDK spec,
``isFilteredOut``): ``{"attribute", "seed", "hashVersion": 2, "ranges": [[share, 1]]}`` keeps
the units whose hash is in ``[share, 1)``, i.e. everyone outside the holdout. The attribute is
the one the rule hashes (an experiment's hash attribute, a rollout's), so the holdout holds out
"the unit" whatever attribute names it. As in the SDKs, a unit without a hashable value of that
attribute is filtered out too; such a unit never enters the rule anyway (no hash, no bucket).

SDKs read an experiment's ``filters`` instead of its ``namespace`` (never both), so an
experiment with a namespace carries the namespace as a second filter (`namespace_filter`).

For the long-term comparison, a second slice of the same size, ``[share, 2 share)``, is the
"general" sample: units outside the holdout recorded alongside the holdout's (`arm`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bucketing.hashing import gb_hash_many, hash_string, hash_v2_from_state, seed_state

if TYPE_CHECKING:
    import numpy as np

HOLDOUT = "holdout"
GENERAL = "general"
ARMS = (HOLDOUT, GENERAL)
MAX_SHARE = 0.5  # the general sample [share, 2 share) must fit in [0, 1)
HASH_VERSION = 2


@dataclass(frozen=True)
class HoldoutSpec:
    """The holdout as served: its seed and share (``0 < share <= MAX_SHARE``). Raises
    ``ValueError`` when either is unusable."""

    seed: str
    share: float
    if TYPE_CHECKING:  # set in __post_init__, deliberately not a dataclass field
        _state: int

    def __post_init__(self) -> None:
        if not isinstance(self.seed, str) or not self.seed:
            raise ValueError("the holdout's seed must be a non-empty string")
        share = self.share
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not math.isfinite(share)
            or not 0 < share <= MAX_SHARE
        ):
            raise ValueError(f"the holdout's share must be in (0, {MAX_SHARE}], got {share!r}")
        object.__setattr__(self, "_state", seed_state(self.seed))

    def bucket(self, unit: str) -> float:
        """The unit's hash with the holdout's seed, in [0, 1)."""
        return hash_v2_from_state(self._state, unit)

    def holds(self, unit: str) -> bool:
        """Whether this (non-empty, already hashed-as-string) unit is in the holdout."""
        return self.bucket(unit) < self.share


def filters_out(spec: HoldoutSpec, attributes: Mapping[str, Any], attribute: str) -> bool:
    """What the SDKs' ``isFilteredOut`` answers for the rule's holdout filter: True when the
    unit has no hashable value of ``attribute`` or is in the holdout."""
    unit = attributes.get(attribute)
    if unit.__class__ is not str:
        unit = hash_string(unit)
    return not unit or spec.holds(unit)


def holdout_filter(spec: HoldoutSpec, attribute: str) -> dict[str, Any]:
    """The payload filter that keeps a rule away from the holdout's units."""
    return {
        "attribute": attribute,
        "seed": spec.seed,
        "hashVersion": HASH_VERSION,
        "ranges": [[spec.share, 1.0]],
    }


def namespace_filter(namespace: Sequence[Any], attribute: str) -> dict[str, Any]:
    """A namespace ``(id, start, end)`` as the equivalent filter: the SDKs' ``inNamespace`` is
    ``gb_hash("__" + id, unit, 1)`` in ``[start, end)``."""
    ns_id, start, end = namespace
    return {
        "attribute": attribute,
        "seed": "__" + ns_id,
        "hashVersion": 1,
        "ranges": [[start, end]],
    }


def arm(spec: HoldoutSpec, unit_id: str) -> str | None:
    """``"holdout"`` for ``[0, share)``, ``"general"`` for the equal-sized sample
    ``[share, 2 share)`` of everyone else, None otherwise (and for an empty id)."""
    if not unit_id:
        return None
    n = spec.bucket(unit_id)
    if n < spec.share:
        return HOLDOUT
    if n < 2 * spec.share:
        return GENERAL
    return None


def arms_many(spec: HoldoutSpec, unit_ids: Sequence[str]) -> list[str | None]:
    """`arm` for many units, hashing with numpy from a few hundred on."""
    if len(unit_ids) < 256:
        return [arm(spec, u) for u in unit_ids]
    buckets: np.ndarray = gb_hash_many(spec.seed, list(unit_ids), HASH_VERSION)
    out: list[str | None] = []
    for unit, n in zip(unit_ids, buckets.tolist(), strict=True):
        if not unit:
            out.append(None)
        elif n < spec.share:
            out.append(HOLDOUT)
        elif n < 2 * spec.share:
            out.append(GENERAL)
        else:
            out.append(None)
    return out


def held_many(spec: HoldoutSpec, units: Sequence[str]) -> np.ndarray:
    """`HoldoutSpec.holds` for many non-empty units, as a boolean array (numpy)."""
    return gb_hash_many(spec.seed, list(units), HASH_VERSION) < spec.share
