"""``POST /api/v1/events/beacon?key=<browser key>``: events from web pages
(``static/abacus/beacon.js`` posts them with ``navigator.sendBeacon``).

An environment's public browser key posts exposures and metric events of its own project (flag
exposures in its own environment) and nothing else, from the pages of the environment's allowed
origins, in small batches, validated and stored exactly as ``POST /api/v1/events`` does (the
same parsing, the same ``events_ingest``). The key rides in the query string because
sendBeacon cannot set headers; the body is the JSON of ``/events``, sent as ``text/plain`` (no
CORS preflight) or ``application/json``. ``OPTIONS`` answers the preflight of the latter.
Rate limits per client address and per key: ``experiments.browser_auth``.
"""

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.request import Request
from rest_framework.response import Response

from assignments.api_schemas import EventsResponseSchema
from assignments.apis import PayloadTooLarge, ServiceApi, event_batch, ingest_response
from assignments.services import events_ingest
from experiments.browser_auth import (
    KEY_PARAMETER,
    AllowedOrigin,
    BrowserKeyAuthentication,
    BrowserKeyRateThrottle,
    address_rate_limit,
    cors_headers,
)
from experiments.models import Environment

# A browser batch is small: a page's events over a few seconds (the script sends 20 at most).
MAX_BROWSER_BATCH = 100
# sendBeacon queues at most 64 KiB per page, so a beacon's body is never larger.
MAX_BROWSER_BODY_BYTES = 64 * 1024
BEACON_CONTENT_TYPES = ("text/plain", "application/json")

_REQUEST = inline_serializer(
    "BeaconEventsRequest",
    {
        "events": serializers.ListField(
            child=serializers.DictField(),
            max_length=MAX_BROWSER_BATCH,
            help_text="exposures and metric events, as for POST /api/v1/events",
        )
    },
)
_EXAMPLE = {
    "events": [
        {
            "event_id": "5f0c7c1e-7d0b-4c3e-9a53-2f1c6c1b9e01",
            "type": "exposure",
            "experiment": "checkout-v2",
            "variant": "treatment",
            "unit_id": "u1",
            "timestamp": "2026-11-29T10:00:00Z",
        },
        {
            "event_id": "0b6a8d4e-2a9f-4a57-8a5e-0d8f3e1c2b7a",
            "type": "metric",
            "name": "purchase",
            "unit_id": "u1",
            "value": 12.5,
            "timestamp": "2026-11-29T10:01:00Z",
        },
    ]
}


class BeaconEventsApi(ServiceApi):
    authentication_classes = [BrowserKeyAuthentication]
    permission_classes = [AllowedOrigin]
    throttle_classes = [BrowserKeyRateThrottle]
    max_body_bytes = MAX_BROWSER_BODY_BYTES
    environment: Environment | None = None  # once the key is known, for the CORS headers

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        address_rate_limit(request)  # before the key is looked up: floods cost no query
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        super().perform_authentication(request)
        self.environment = request.auth

    def finalize_response(
        self, request: Request, response: HttpResponse, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        response = super().finalize_response(request, response, *args, **kwargs)
        return cors_headers(
            response,
            environment=self.environment,
            origin=request.headers.get("Origin", ""),
            preflight=request.method == "OPTIONS" and response.status_code < 300,
        )

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The CORS preflight: reached only with a valid key from an allowed origin."""
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="events_beacon_create",
        summary="Events from web pages (an environment's public browser key)",
        description="The body of POST /api/v1/events, at most "
        f"{MAX_BROWSER_BATCH} events and {MAX_BROWSER_BODY_BYTES:,} bytes, as text/plain "
        "(navigator.sendBeacon: no preflight) or application/json. Only from an origin the "
        "environment allows; rate limited per key and per client address (429 with "
        "Retry-After). The key posts nothing but these events.",
        auth=[],
        parameters=[
            OpenApiParameter(
                KEY_PARAMETER,
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                required=True,
                description="the environment's public browser key (web-...)",
            ),
            OpenApiParameter(
                "Origin",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                description="the page's origin (browsers send it): one of the environment's "
                "allowed origins",
            ),
        ],
        request={"text/plain": _REQUEST, "application/json": _REQUEST},
        responses={
            202: EventsResponseSchema,
            401: OpenApiResponse(description="No key, or not the current browser key."),
            403: OpenApiResponse(description="The Origin is not allowed for this key."),
            413: OpenApiResponse(description="Over the batch or body limit."),
            415: OpenApiResponse(description="Neither text/plain nor application/json."),
            429: OpenApiResponse(description="Over a rate limit; see Retry-After."),
        },
        examples=[OpenApiExample("a page's batch", request_only=True, value=_EXAMPLE)],
    )
    def post(self, request: Request) -> Response:
        content_type = request.content_type.split(";", 1)[0].strip().lower()
        if content_type not in BEACON_CONTENT_TYPES:
            raise UnsupportedMediaType(
                content_type,
                detail={
                    "detail": f"Send the events as text/plain or application/json (got "
                    f"{content_type[:100] or 'no content type'}).",
                    "field": "Content-Type",
                },
            )
        if len(request.body) > MAX_BROWSER_BODY_BYTES:  # a body sent without a length
            raise PayloadTooLarge(
                {
                    "detail": f"A browser batch is at most {MAX_BROWSER_BODY_BYTES:,} bytes.",
                    "field": "body",
                }
            )
        environment = request.auth
        result = events_ingest(
            project=environment.project,
            events=event_batch(self.json_body(request), MAX_BROWSER_BATCH),
            environment_id=environment.pk,
        )
        return ingest_response(result)
