"""Service API (Bearer API keys): /assign, /assign/bulk, /events; and the SDK features payload."""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments.features import build_payload, etag
from assignments.selectors import project_specs
from assignments.services import MAX_BATCH, assignments_get_or_create, events_ingest
from experiments.auth import ApiKeyAuthentication, scope_required
from experiments.models import Project

MAX_BULK_UNITS = 1000


class ServiceApi(APIView):
    authentication_classes = [ApiKeyAuthentication]


class AssignInput(serializers.Serializer):
    unit_id = serializers.CharField(max_length=200)
    attributes = serializers.DictField(required=False, default=dict)
    experiments = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, allow_null=True
    )


class AssignApi(ServiceApi):
    permission_classes = [scope_required("assign")]

    @extend_schema(request=AssignInput, responses={200: dict})
    def post(self, request: Request) -> Response:
        serializer = AssignInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        [answer] = assignments_get_or_create(
            project=request.auth.project,
            units=[(data["unit_id"], data["attributes"])],
            experiment_keys=data.get("experiments"),
        )
        return Response({"unit_id": data["unit_id"], "assignments": answer})


class UnitInput(serializers.Serializer):
    unit_id = serializers.CharField(max_length=200)
    attributes = serializers.DictField(required=False, default=dict)


class AssignBulkInput(serializers.Serializer):
    units = UnitInput(many=True, max_length=MAX_BULK_UNITS, allow_empty=False)
    experiments = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, allow_null=True
    )


class AssignBulkApi(ServiceApi):
    permission_classes = [scope_required("assign")]

    @extend_schema(request=AssignBulkInput, responses={200: dict})
    def post(self, request: Request) -> Response:
        serializer = AssignBulkInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        units = [(u["unit_id"], u["attributes"]) for u in data["units"]]
        answers = assignments_get_or_create(
            project=request.auth.project, units=units, experiment_keys=data.get("experiments")
        )
        return Response(
            {
                "results": [
                    {"unit_id": unit_id, "assignments": answer}
                    for (unit_id, _), answer in zip(units, answers, strict=True)
                ]
            }
        )


class EventsApi(ServiceApi):
    permission_classes = [scope_required("ingest")]

    @extend_schema(request=dict, responses={202: dict})
    def post(self, request: Request) -> Response:
        body: Any = request.data
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return Response(
                {
                    "detail": "The body must be a JSON object with an 'events' list.",
                    "field": "events",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        if len(events) > MAX_BATCH:
            return Response(
                {
                    "detail": f"A batch holds at most {MAX_BATCH} events (got {len(events)}).",
                    "field": "events",
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        result = events_ingest(project=request.auth.project, events=events)
        return Response(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rejected": result.rejected,
            },
            status=status.HTTP_202_ACCEPTED,
        )


@require_GET
def features_view(request: HttpRequest, client_key: str) -> HttpResponse:
    """GrowthBook-compatible features payload; the client key is public, not a secret."""
    project = get_object_or_404(Project, client_key=client_key)
    specs = project_specs(project)
    payload = build_payload(specs.specs.values(), date_updated=specs.version[0])
    tag = etag(payload)
    if request.headers.get("If-None-Match") == tag:
        response = HttpResponse(status=304)
    else:
        response = JsonResponse(payload)
    response["ETag"] = tag
    response["Cache-Control"] = "public, max-age=30"
    response["Access-Control-Allow-Origin"] = "*"
    return response
