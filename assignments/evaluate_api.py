"""``POST /api/v1/evaluate``: a service without a GrowthBook SDK asks the server for its flags.

Bearer API key with the ``evaluate`` or ``assign`` scope; the flags are the key's environment's
(production for keys made before environments), or those of ``"environment"`` in the body, an
environment of the key's project. The body is parsed by hand like the other service endpoints
(`assignments.apis`); every shape problem is a 400 naming the field.
"""

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from assignments.api_schemas import EvaluateResponseSchema
from assignments.apis import ServiceApi, _attributes, _unit_id
from assignments.services import (
    MAX_EVALUATE_FLAGS,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    evaluation_environment,
    flags_evaluate,
)
from experiments.models import ApiKey

EVALUATE_SCOPES = ("evaluate", "assign")


class EvaluateScope(permissions.BasePermission):
    message = "This API key lacks the 'evaluate' scope (or 'assign')."

    def has_permission(self, request: Request, view: object) -> bool:
        api_key = request.auth
        return isinstance(api_key, ApiKey) and any(s in api_key.scopes for s in EVALUATE_SCOPES)


def _flag_keys(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValidationError({"flags": ["A list of flag keys is required."]})
    if len(value) > MAX_EVALUATE_FLAGS:
        raise ValidationError(
            {"flags": [f"At most {MAX_EVALUATE_FLAGS} flags per request (got {len(value)})."]}
        )
    for i, key in enumerate(value):
        if key.__class__ is not str or not key or len(key) > MAX_NAME_LENGTH:
            raise ValidationError(
                {f"flags[{i}]": [f"A flag key (1 to {MAX_NAME_LENGTH} characters) is required."]}
            )
    return value


def _environment_key(value: Any) -> str | None:
    if value is None:
        return None
    if value.__class__ is not str or not value or len(value) > MAX_NAME_LENGTH:
        raise ValidationError({"environment": ["An environment key is required."]})
    return value


def _track(value: Any) -> bool:
    if value is None:
        return False
    if value.__class__ is not bool:
        raise ValidationError({"track": ["Must be true or false."]})
    return value


_RESULT_EXAMPLE = {"value": True, "variation": "on", "reason": "rollout", "rule_id": "r1"}


class EvaluateApi(ServiceApi):
    permission_classes = [EvaluateScope]

    @extend_schema(
        operation_id="evaluate",
        request=inline_serializer(
            "EvaluateRequest",
            {
                "unit_id": serializers.CharField(max_length=MAX_ID_LENGTH),
                "attributes": serializers.DictField(
                    required=False, help_text="targeting attributes; 'id' defaults to unit_id"
                ),
                "flags": serializers.ListField(
                    child=serializers.CharField(),
                    required=False,
                    max_length=MAX_EVALUATE_FLAGS,
                    help_text="flag keys (every served flag when omitted)",
                ),
                "environment": serializers.CharField(
                    required=False,
                    help_text="an environment key of the key's project (default: the key's)",
                ),
                "track": serializers.BooleanField(
                    required=False,
                    default=False,
                    help_text="record one flag exposure per flag served",
                ),
            },
        ),
        responses={200: EvaluateResponseSchema},
        examples=[
            OpenApiExample(
                "one unit",
                request_only=True,
                value={"unit_id": "u1", "attributes": {"country": "US"}, "flags": ["new-nav"]},
            ),
            OpenApiExample(
                "answer",
                response_only=True,
                value={
                    "environment": "production",
                    "flags": {"new-nav": _RESULT_EXAMPLE},
                    "unknown": [],
                },
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = self.json_body(request)
        unit_id = _unit_id(body.get("unit_id"), "unit_id")
        attributes = _attributes(body.get("attributes"), "attributes")
        keys = _flag_keys(body.get("flags"))
        track = _track(body.get("track"))
        environment = evaluation_environment(
            api_key=request.auth, requested=_environment_key(body.get("environment"))
        )
        evaluation = flags_evaluate(
            environment=environment,
            unit_id=unit_id,
            attributes=attributes,
            keys=keys,
            track=track,
        )
        flags = {}
        for key, result in evaluation.results.items():
            answer = {
                "value": result.value,
                "variation": result.variation,
                "reason": result.reason,
                "rule_id": result.rule_id,
            }
            if result.experiment is not None:
                answer["experiment"] = result.experiment
            flags[key] = answer
        return Response(
            {"environment": evaluation.environment, "flags": flags, "unknown": evaluation.unknown}
        )
