"""Response shapes of the service API and the SDK features payload, for the OpenAPI schema only.

The views build plain dicts (see the module docstring of `assignments.apis`); these serializers
only describe them. `tests/assignments/test_api_schema.py` checks the schema names their fields.
"""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView


class AssignmentSchema(serializers.Serializer):
    variant = serializers.CharField(help_text="the variant key")
    value = serializers.JSONField(allow_null=True, help_text="the variant's value (any JSON)")
    in_experiment = serializers.BooleanField(
        required=False,
        help_text="present and false when the experiment is paused, rolled back or concluded: "
        "everyone gets this answer and nothing is stored",
    )


class AssignResponseSchema(serializers.Serializer):
    unit_id = serializers.CharField()
    assignments = serializers.DictField(
        child=AssignmentSchema(),
        help_text="per experiment key; experiments the unit is not in are omitted",
    )


class AssignBulkResponseSchema(serializers.Serializer):
    results = AssignResponseSchema(many=True, help_text="one per unit, in the order sent")


class RejectedEventSchema(serializers.Serializer):
    index = serializers.IntegerField(help_text="position of the event in the batch")
    field = serializers.CharField(help_text="the field at fault")
    message = serializers.CharField()


class IgnoredEventSchema(serializers.Serializer):
    index = serializers.IntegerField(help_text="position of the event in the batch")
    reason = serializers.CharField()
    message = serializers.CharField()


class EventsResponseSchema(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="events stored")
    duplicates = serializers.IntegerField(
        help_text="events whose event_id was seen before, or twice in the batch: counted, "
        "not stored again"
    )
    rejected = RejectedEventSchema(many=True, help_text="events with a shape problem")
    ignored = IgnoredEventSchema(many=True, help_text="valid events that were not stored")


class FlagResultSchema(serializers.Serializer):
    value = serializers.JSONField(help_text="the served variation's value (the flag's type)")
    variation = serializers.CharField(help_text="the served variation's key")
    reason = serializers.ChoiceField(
        choices=["off", "prerequisite", "rule", "rollout", "experiment", "default"],
        help_text="off: the flag is off in the environment; prerequisite: a prerequisite flag "
        "does not serve what it needs; rule: a force rule matched; rollout: a rollout rule "
        "bucketed the unit; experiment: an experiment rule; default: no rule matched",
    )
    rule_id = serializers.CharField(
        allow_null=True, help_text="the rule that decided (null for off, prerequisite, default)"
    )
    experiment = serializers.CharField(
        required=False, help_text="experiment rules only: the experiment's key"
    )


class EvaluateResponseSchema(serializers.Serializer):
    environment = serializers.CharField(help_text="the environment evaluated")
    flags = serializers.DictField(
        child=FlagResultSchema(), help_text="per flag key, for every flag served (or asked for)"
    )
    unknown = serializers.ListField(
        child=serializers.CharField(),
        help_text="flag keys asked for that the environment does not serve (unknown or archived)",
    )


class FeatureSchema(serializers.Serializer):
    defaultValue = serializers.JSONField(allow_null=True)  # noqa: N815 (GrowthBook's name)
    rules = serializers.ListField(
        child=serializers.DictField(),
        help_text="GrowthBook rules: an experiment rule (key, seed, hashVersion, "
        "hashAttribute, coverage, weights, variations, meta, phase, condition, namespace) "
        "or a force rule for a shipped variant",
    )


class FeaturesPayloadSchema(serializers.Serializer):
    status = serializers.IntegerField(help_text="always 200")
    features = serializers.DictField(
        child=FeatureSchema(), help_text="one per non-draft experiment, by experiment key"
    )
    dateUpdated = serializers.CharField(  # noqa: N815 (GrowthBook's name)
        allow_null=True, help_text="latest change of the project's experiments (ISO time)"
    )


class FeaturesSchemaView(APIView):
    """Documents `assignments.apis.features_view` in the OpenAPI schema; it never serves a
    request (the plain Django view does, with its own ETag and CORS handling)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="features_retrieve",
        tags=["features"],
        auth=[],
        summary="GrowthBook-compatible features payload for the SDKs",
        description="Public: the client key identifies the project and is not a secret. "
        "Answers 304 without a body when If-None-Match holds the current ETag.",
        parameters=[
            OpenApiParameter(
                "client_key",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="the project's public client key",
            ),
            OpenApiParameter(
                "If-None-Match",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="ETags the client holds (weak tags compare equal)",
            ),
            OpenApiParameter(
                "ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304]
            ),
            OpenApiParameter(
                "Cache-Control", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304]
            ),
        ],
        responses={
            200: FeaturesPayloadSchema,
            304: OpenApiResponse(description="Not modified: the ETag is current."),
            404: OpenApiResponse(description="No project has this client key."),
        },
    )
    def get(self, request: Request, client_key: str) -> None:  # pragma: no cover
        raise NotImplementedError("documentation only: assignments.apis.features_view serves")
