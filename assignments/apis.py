"""Service API (Bearer API keys): /assign, /assign/bulk, /events; and the SDK features payload.
Also the one people's endpoint on events: project admins removing bad events (session or token).

The service endpoints parse their JSON bodies themselves instead of through DRF serializers: a
batch holds up to 10,000 events or 1,000 units, and per-item serializer fields would cost more
than the work itself. Every shape problem is a 400 naming the field (and the item's index), a
body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` or a batch over its limit is a 413 naming the limit.
"""

import json
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments.api_schemas import (
    AssignBulkResponseSchema,
    AssignResponseSchema,
    EventsResponseSchema,
    FeaturesSchemaView,
)
from assignments.selectors import features_payload_for, metric_baseline
from assignments.services import (
    EVENT_TYPES,
    MAX_BATCH,
    MAX_DELETE_FILTER_ITEMS,
    MAX_ID_LENGTH,
    IngestResult,
    assignments_get_or_create,
    events_delete,
    events_ingest,
)
from core.cache import ProcessCache
from experiments.apis import project_for
from experiments.auth import ApiKeyAuthentication, scope_required
from experiments.models import Environment, Metric

MAX_BULK_UNITS = 1000


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large."


class JsonOnly(BaseContentNegotiation):
    """Services speak JSON: no Accept header to parse, no browsable page (the hot path's
    negotiation cost more than its JSON rendering)."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0]

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: Any = None
    ) -> tuple:
        return renderers[0], renderers[0].media_type


class ServiceApi(APIView):
    """Base of the API-key endpoints: the key fixes the project; bodies are size-checked."""

    authentication_classes = [ApiKeyAuthentication]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnly
    # The largest body, in bytes; None: DATA_UPLOAD_MAX_MEMORY_SIZE.
    max_body_bytes: int | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, scope, throttling first
        limit = self.max_body_bytes or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            raise PayloadTooLarge(
                {
                    "detail": f"The request body is {length:,} bytes; the limit is {limit:,} "
                    f"bytes. Send smaller batches.",
                    "field": "body",
                }
            )

    def json_body(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object, or a 400 saying what is wrong with it."""
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise ParseError(
                {"detail": f"The body is not valid JSON: {exc}.", "field": "body"}
            ) from None
        except RecursionError:
            raise ParseError(
                {"detail": "The body is nested too deeply.", "field": "body"}
            ) from None
        if not isinstance(body, dict):
            raise ParseError({"detail": "The body must be a JSON object.", "field": "body"})
        return body


def _unit_id(value: Any, where: str) -> str:
    """A unit id: a non-empty string (an integer is taken as its decimal string)."""
    if value.__class__ is int:
        value = str(value)
    if value.__class__ is not str or not value:
        raise ValidationError({where: ["A non-empty string is required."]})
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError({where: [f"At most {MAX_ID_LENGTH} characters."]})
    if "\x00" in value:
        raise ValidationError({where: ["NUL characters are not allowed."]})
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValidationError({where: ["Not valid Unicode (lone surrogate)."]}) from None
    return value


def _attributes(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError({where: ["Must be a JSON object."]})
    return value


def _experiment_keys(body: dict[str, Any]) -> list[str] | None:
    keys = body.get("experiments")
    if keys is None:
        return None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValidationError({"experiments": ["A list of experiment keys is required."]})
    return keys


_ASSIGNMENTS_EXAMPLE = {"checkout-v2": {"variant": "treatment", "value": {"layout": "new"}}}


class AssignApi(ServiceApi):
    permission_classes = [scope_required("assign")]

    @extend_schema(
        request=inline_serializer(
            "AssignRequest",
            {
                "unit_id": serializers.CharField(max_length=MAX_ID_LENGTH),
                "attributes": serializers.DictField(required=False),
                "experiments": serializers.ListField(child=serializers.CharField(), required=False),
            },
        ),
        responses={200: AssignResponseSchema},
        examples=[
            OpenApiExample(
                "one unit",
                request_only=True,
                value={"unit_id": "u1", "attributes": {"country": "US"}},
            ),
            OpenApiExample(
                "answer",
                response_only=True,
                value={"unit_id": "u1", "assignments": _ASSIGNMENTS_EXAMPLE},
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = self.json_body(request)
        unit_id = _unit_id(body.get("unit_id"), "unit_id")
        [answer] = assignments_get_or_create(
            project=request.auth.project,
            units=[(unit_id, _attributes(body.get("attributes"), "attributes"))],
            experiment_keys=_experiment_keys(body),
        )
        return Response({"unit_id": unit_id, "assignments": answer})


class AssignBulkApi(ServiceApi):
    permission_classes = [scope_required("assign")]

    @extend_schema(
        request=inline_serializer(
            "AssignBulkRequest",
            {
                "units": serializers.ListField(child=serializers.DictField()),
                "experiments": serializers.ListField(child=serializers.CharField(), required=False),
            },
        ),
        responses={200: AssignBulkResponseSchema},
    )
    def post(self, request: Request) -> Response:
        body = self.json_body(request)
        raw_units = body.get("units")
        if not isinstance(raw_units, list) or not raw_units:
            raise ValidationError({"units": ["A non-empty list of units is required."]})
        if len(raw_units) > MAX_BULK_UNITS:
            raise PayloadTooLarge(
                {
                    "detail": f"At most {MAX_BULK_UNITS} units per request (got {len(raw_units)}).",
                    "field": "units",
                }
            )
        units = []
        for i, unit in enumerate(raw_units):
            if not isinstance(unit, dict):
                raise ValidationError({f"units[{i}]": ["Must be a JSON object."]})
            units.append(
                (
                    _unit_id(unit.get("unit_id"), f"units[{i}].unit_id"),
                    _attributes(unit.get("attributes"), f"units[{i}].attributes"),
                )
            )
        answers = assignments_get_or_create(
            project=request.auth.project, units=units, experiment_keys=_experiment_keys(body)
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

    @extend_schema(
        request=inline_serializer(
            "EventsRequest", {"events": serializers.ListField(child=serializers.DictField())}
        ),
        responses={202: EventsResponseSchema},
    )
    def post(self, request: Request) -> Response:
        result = events_ingest(
            project=request.auth.project,
            events=event_batch(self.json_body(request), MAX_BATCH),
            environment_id=request.auth.environment_id,
        )
        return ingest_response(result)


def event_batch(body: dict[str, Any], limit: int) -> list[Any]:
    """The body's 'events' list, at most ``limit`` long (413 past it, 400 without one)."""
    events = body.get("events")
    if not isinstance(events, list):
        raise ValidationError(
            {"detail": "The body must be a JSON object with an 'events' list.", "field": "events"}
        )
    if len(events) > limit:
        raise PayloadTooLarge(
            {
                "detail": f"A batch holds at most {limit:,} events (got {len(events):,}): "
                "split it.",
                "field": "events",
            }
        )
    return events


def ingest_response(result: IngestResult) -> Response:
    """202 with what was accepted, duplicated, rejected (index, field, message) and ignored."""
    return Response(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "ignored": result.ignored,
        },
        status=status.HTTP_202_ACCEPTED,
    )


def _id_list(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=MAX_ID_LENGTH, trim_whitespace=False),
        required=False,
        max_length=MAX_DELETE_FILTER_ITEMS,
        help_text=help_text,
    )


class EventDeleteInput(serializers.Serializer):
    event_ids = _id_list("Delete the events with these ids.")
    unit_ids = _id_list("Delete the events of these units.")
    names = _id_list(
        "Delete the metric events with these names (exposures and flag exposures have none)."
    )
    type = serializers.ChoiceField(
        choices=EVENT_TYPES,
        default="all",
        help_text="Which events: metric, exposure (of experiments), flag_exposure or all.",
    )
    since = serializers.DateTimeField(required=False, help_text="Event timestamp >= since.")
    until = serializers.DateTimeField(required=False, help_text="Event timestamp < until.")
    dry_run = serializers.BooleanField(default=False, help_text="Only count what would be deleted.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # A misspelt filter (unit_id for unit_ids) must not silently widen a deletion.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise ValidationError(
                {unknown[0]: [f"Unknown field; the filters are {', '.join(self.fields)}."]}
            )
        return data


class EventCounts(serializers.Serializer):
    metric = serializers.IntegerField()
    exposure = serializers.IntegerField()
    flag_exposure = serializers.IntegerField()


class EventDeleteOutput(serializers.Serializer):
    matched = EventCounts()
    deleted = EventCounts()
    dry_run = serializers.BooleanField()


class EventDeleteApi(APIView):
    """POST /api/v1/projects/P/events/delete: a project admin removes bad events, audited.

    Filters combine with AND, at least one is required; see docs/operations.md "Removing bad
    events"."""

    @extend_schema(
        operation_id="projects_events_delete",
        request=EventDeleteInput,
        responses={200: EventDeleteOutput},
        examples=[
            OpenApiExample(
                "one bad value",
                request_only=True,
                value={"event_ids": ["e-123"], "type": "metric", "dry_run": True},
            )
        ],
    )
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = EventDeleteInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        deletion = events_delete(project=proj, actor=request.user, kind=data.pop("type"), **data)
        return Response(
            EventDeleteOutput(
                {
                    "matched": deletion.matched,
                    "deleted": deletion.deleted,
                    "dry_run": deletion.dry_run,
                }
            ).data
        )


# Environments by client key, kept in the process like API keys (core/cache.py).
_environments: ProcessCache[Environment] = ProcessCache("client keys")


@require_GET
def features_view(request: HttpRequest, client_key: str) -> HttpResponse:
    """GrowthBook-compatible features payload; the client key is public, not a secret. The
    environment and its payload are cached in the process (no query while nothing changed)."""
    environment = _environments.get_loaded(
        client_key,
        lambda: Environment.objects.select_related("project").filter(client_key=client_key).first(),
    )
    if environment is None:
        raise Http404("No environment has this client key.")
    payload, tag = features_payload_for(environment)
    wanted = _etags(request.headers.get("If-None-Match", ""))
    fresh = tag in wanted or "*" in wanted
    response = HttpResponse(status=304) if fresh else JsonResponse(payload)
    response["ETag"] = tag
    response["Cache-Control"] = "public, max-age=30"
    response["Access-Control-Allow-Origin"] = "*"
    return response


# The schema generator documents the view through this class (it only reads APIViews);
# requests are still served by the plain function above.
features_view.cls = FeaturesSchemaView  # type: ignore[attr-defined]
features_view.initkwargs = {}  # type: ignore[attr-defined]


def _etags(header: str) -> set[str]:
    """The tags of an If-None-Match header (weak ones compare equal, RFC 9110 13.1.2)."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


class BaselineInput(serializers.Serializer):
    days = serializers.IntegerField(default=14, min_value=1, max_value=90)


class BaselineOutput(serializers.Serializer):
    metric = serializers.CharField()
    kind = serializers.CharField()
    days = serializers.IntegerField()
    since = serializers.DateTimeField()
    through = serializers.DateTimeField()
    window_hours = serializers.IntegerField()
    units = serializers.IntegerField()
    daily_units = serializers.FloatField()
    mean = serializers.FloatField(allow_null=True)
    variance = serializers.FloatField(allow_null=True)


class MetricBaselineApi(APIView):
    """GET /api/v1/projects/<project>/metrics/<key>/baseline?days=14: the metric's recent
    per-unit mean and variance and daily units, to prefill the power calculator."""

    @extend_schema(parameters=[BaselineInput], responses=BaselineOutput)
    def get(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project)
        metric = get_object_or_404(Metric, project=proj, key=key)
        serializer = BaselineInput(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        try:
            baseline = metric_baseline(metric, **serializer.validated_data)
        except ValueError as exc:
            return Response({"days": [f"{str(exc)[:1].upper()}{str(exc)[1:]}."]}, status=400)
        return Response(BaselineOutput(baseline).data)
