"""An OpenFeature provider over `AbacusClient` (optional: ``pip install
'abacus-client[openfeature]'``, which brings the ``openfeature-sdk`` package).

Evaluation is the client's (local, from the environment's payload), so a value, its
variation key and its reason are what ``POST /api/v1/evaluate`` says, and exposures are
recorded as the client records them. OpenFeature's vocabulary is narrower than abacus's, so
the abacus reason, the rule id and the experiment travel in ``flag_metadata`` as well
(docs/clients.md, "OpenFeature").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from abacus_client.client import AbacusClient, Evaluation

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagValueType
    from openfeature.track import TrackingEventDetails

logger = logging.getLogger("abacus_client")

# abacus reason -> OpenFeature reason. A prerequisite serves the off variation because of what
# another flag serves to this unit: a per-unit, dynamic decision (TARGETING_MATCH), not the
# flag being off for everyone (DISABLED). An experiment assigns by hash like a rollout: SPLIT.
REASONS: dict[str, str] = {
    "off": Reason.DISABLED,
    "prerequisite": Reason.TARGETING_MATCH,
    "rule": Reason.TARGETING_MATCH,
    "force": Reason.TARGETING_MATCH,
    "rollout": Reason.SPLIT,
    "experiment": Reason.SPLIT,
    "default": Reason.DEFAULT,
}

# Resolver type -> the kind of value it accepts ("number" covers integer and float).
_KINDS = {"boolean": "boolean", "string": "string", "integer": "number", "float": "number",
          "object": "object"}  # fmt: skip


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict | list):
        return "object"
    return None


def _payload_values(feature: Mapping[str, Any]) -> list[Any]:
    """The values a payload feature can serve (its default, forced values, variations)."""
    values = [feature.get("defaultValue")]
    for rule in feature.get("rules") or []:
        if "force" in rule:
            values.append(rule["force"])
        values.extend(rule.get("variations") or [])
    return values


def _convert(value: Any, wanted: str) -> tuple[bool, Any]:
    """(fits, the value as the resolver returns it). Integers serve float resolvers; a float
    with an integral value (3.0) serves an integer resolver; booleans are never numbers."""
    kind = _kind(value)
    if wanted == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if wanted == "float":
        return (True, float(value)) if kind == "number" else (False, value)
    return kind == _KINDS[wanted], value


def _attribute(value: Any) -> Any:
    """Context attributes as targeting attributes: dates become ISO 8601 text (the payload's
    conditions compare text); containers are converted element by element."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _attribute(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_attribute(v) for v in value]
    return value


class AbacusProvider(AbstractProvider):
    """OpenFeature provider for one abacus environment, through an `AbacusClient`.

    The evaluation context's ``targeting_key`` is the unit id (an ``id`` attribute is used when
    there is no targeting key); its attributes are the targeting attributes. ``track``: record
    exposures on evaluation (as ``client.evaluate`` does; the client's own
    ``track_exposures=False`` also turns them off). The client stays the caller's:
    ``shutdown`` flushes its events but does not close it.
    """

    def __init__(self, client: AbacusClient, *, track: bool = True) -> None:
        super().__init__()
        self.client = client
        self.track_exposures = track

    def get_metadata(self) -> Metadata:
        return Metadata(name="abacus")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        # A client built with wait_for_payload=False has no payload yet: fetch it now, so the
        # provider is READY with flags. If abacus is unreachable the client keeps polling, and
        # evaluations answer PROVIDER_NOT_READY (with the default) until a payload arrives.
        if not self.client.ready and not self.client.refresh() and not self.client.ready:
            logger.warning("abacus OpenFeature provider: no payload yet; polling continues")

    def shutdown(self) -> None:
        self.client.flush(self.client.close_timeout)

    # -- resolvers -----------------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, "integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, "float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, "object")

    def _resolve(
        self, key: str, default: Any, context: EvaluationContext | None, wanted: str
    ) -> FlagResolutionDetails[Any]:
        context = context or EvaluationContext()
        attributes = {str(k): _attribute(v) for k, v in (context.attributes or {}).items()}
        unit_id = context.targeting_key or attributes.get("id")
        if unit_id in (None, ""):
            return _error(default, ErrorCode.TARGETING_KEY_MISSING, "no targeting_key (unit id)")
        unit_id = str(unit_id)
        if not self.client.ready:
            return _error(default, ErrorCode.PROVIDER_NOT_READY, "no payload from abacus yet")
        # Refuse a resolver of the wrong type before evaluating, so that no exposure is recorded
        # for a unit served the default: when none of the values the payload has for the key
        # fits. A flag's values share its type, so this is every mismatch but one: a flag whose
        # values fit only in part (a number flag of 10 and 2.5 asked for an integer, a JSON
        # flag mixing kinds) is checked on the value served, after the evaluation.
        feature = self.client._model.features.get(key)
        if feature is None:
            return _error(default, ErrorCode.FLAG_NOT_FOUND, f"no flag or experiment {key!r}")
        if not any(_convert(value, wanted)[0] for value in _payload_values(feature)):
            return _mismatch(default, key, wanted, feature.get("defaultValue"))
        evaluation = self.client.evaluate(key, unit_id, attributes, track=self.track_exposures)
        if evaluation.reason == "unknown":
            return _error(default, ErrorCode.FLAG_NOT_FOUND, f"no flag or experiment {key!r}")
        fits, value = _convert(evaluation.value, wanted)
        if not fits:
            return _mismatch(default, key, wanted, evaluation.value)
        return FlagResolutionDetails(
            value=value,
            reason=REASONS.get(evaluation.reason, Reason.UNKNOWN),
            variant=evaluation.variation,
            flag_metadata=_metadata(evaluation),
        )

    # -- events --------------------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """OpenFeature's ``client.track(name, context, details)``: a metric event for the
        context's unit (``details.value``, default 1; ``details.attributes`` as properties)."""
        context = evaluation_context or EvaluationContext()
        unit_id = context.targeting_key or (context.attributes or {}).get("id")
        if unit_id in (None, ""):
            logger.warning(
                "abacus: track(%r) without a targeting_key, not sent", tracking_event_name
            )
            return
        value = getattr(tracking_event_details, "value", None)
        properties = getattr(tracking_event_details, "attributes", None) or None
        self.client.track(
            str(unit_id),
            tracking_event_name,
            1.0 if value is None else value,
            properties=_attribute(properties) if properties else None,
        )


def _metadata(evaluation: Evaluation) -> dict[str, str]:
    metadata = {"reason": evaluation.reason}
    if evaluation.rule_id:
        metadata["rule_id"] = evaluation.rule_id
    if evaluation.experiment:
        metadata["experiment"] = evaluation.experiment
    return metadata


def _error(default: Any, code: ErrorCode, message: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default, reason=Reason.ERROR, error_code=code, error_message=message
    )


def _mismatch(default: Any, key: str, wanted: str, value: Any) -> FlagResolutionDetails[Any]:
    return _error(
        default, ErrorCode.TYPE_MISMATCH, f"{key!r} serves {type(value).__name__}, not {wanted}"
    )
