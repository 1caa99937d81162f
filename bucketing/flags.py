"""Feature flags as GrowthBook features, and the same decision made on the server.

Pure: plain data in, plain data out (no Django). One definition serves both sides, as for
experiments in `bucketing.payload`: `flag_feature` describes a flag in one environment as a
GrowthBook feature that every GrowthBook SDK evaluates locally, and `evaluate_flag` makes the
same decision on the server for ``POST /api/v1/evaluate`` (with a reason and the rule that
decided), so for any unit the SDK's value equals the server's.

Semantics (docs/flags.md):

- **off** (the flag is disabled in the environment): the off variation, for everyone.
- **prerequisite**: when a prerequisite flag does not serve one of the listed variations to the
  unit (or is off, archived, missing), the off variation.
- **rules**, in order, first match wins:
  - ``force``: units matching the condition (and/or the segment) get the variation;
  - ``rollout``: units matching get a variation by hash (GrowthBook hash v2, the flag's seed,
    the rule's hash attribute): variation i owns the slice ``[sum of the weights before it,
    that sum + its weight)`` of ``[0, 1)``, in the order of the flag's variations, so a unit in
    a variation's slice stays in it as that variation's share grows (when it is first or the
    others shrink from the end). A unit without the hash attribute skips the rule;
  - ``experiment``: an abacus experiment whose variant keys are flag variation keys; a unit the
    experiment includes gets its variant's flag value; units it excludes (coverage, targeting,
    namespace) fall through to the next rule. A concluded experiment with a shipped variant
    forces that variation on the units its targeting matches; otherwise (paused, rolled back,
    concluded without a decision) the rule is skipped.
- **default**: no rule matched: the environment's default variation.

Segments: units whose ``id`` attribute is in ``include``, or (when the segment has a
non-empty condition) that match the condition; minus those whose ``id`` is in ``exclude``. A
segment with an empty condition is exactly its include list.

In the payload each rule becomes one or more GrowthBook rules whose ``id`` starts with the rule
id (``"<rule id>"`` or ``"<rule id>:<variation key>"``); prerequisites become force rules of the
off value gated by ``parentConditions`` on the parent flag's value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bucketing.payload import ExperimentSpec

REASONS = ("off", "prerequisite", "rule", "rollout", "experiment", "default")


@dataclass(frozen=True)
class Variation:
    key: str
    value: Any  # never None: the SDKs read a null force as "no force"


@dataclass(frozen=True)
class SegmentSpec:
    key: str
    condition: dict[str, Any] | None = None  # GrowthBook condition; None or {} = include list only
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleSpec:
    """One rule, resolved: its segment and experiment are given as specs, not keys."""

    id: str
    type: str  # "force" | "rollout" | "experiment"
    condition: dict[str, Any] | None = None  # AND-ed with the segment when both are given
    segment: SegmentSpec | None = None
    variation: str | None = None  # force
    hash_attribute: str = "id"  # rollout
    weights: tuple[tuple[str, float], ...] = ()  # rollout: (variation key, share), summing to 1
    experiment: ExperimentSpec | None = None  # experiment


@dataclass(frozen=True)
class Prerequisite:
    flag: str
    variations: tuple[str, ...]


@dataclass(frozen=True)
class FlagSpec:
    """A flag as served in one environment (plain data, no ORM)."""

    key: str
    type: str  # "boolean" | "string" | "number" | "json"
    variations: tuple[Variation, ...]
    off_variation: str
    seed: str
    enabled: bool
    default_variation: str
    rules: tuple[RuleSpec, ...] = ()
    prerequisites: tuple[Prerequisite, ...] = ()

    def value_of(self, variation: str) -> Any:
        for v in self.variations:
            if v.key == variation:
                return v.value
        raise KeyError(variation)


@dataclass(frozen=True)
class FlagResult:
    value: Any
    variation: str
    reason: str  # one of REASONS
    rule_id: str | None = None
    # Experiment rules: the experiment key and variant the unit is in (for exposure tracking).
    experiment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def segment_condition(segment: SegmentSpec) -> dict[str, Any]:
    """The segment as one GrowthBook condition (see the module docstring)."""
    raise NotImplementedError


def flag_feature(spec: FlagSpec) -> dict[str, Any]:
    """The flag as a GrowthBook feature: ``{"defaultValue": ..., "rules": [...]}``."""
    raise NotImplementedError


def evaluate_flag(
    spec: FlagSpec, attributes: Mapping[str, Any], flags: Mapping[str, FlagSpec]
) -> FlagResult:
    """What the SDK would serve this unit, and why. ``flags``: every flag served in the
    environment by key (for prerequisites)."""
    raise NotImplementedError


def evaluate_flags(
    flags: Mapping[str, FlagSpec],
    attributes: Mapping[str, Any],
    keys: Iterable[str] | None = None,
) -> dict[str, FlagResult]:
    """`evaluate_flag` for the given keys (every flag when None); unknown keys are left out."""
    raise NotImplementedError
