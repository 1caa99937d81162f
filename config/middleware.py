"""Cross-cutting HTTP behaviour: security headers and cookies, and 503s when the database is down.

DRF views turn database outages into 503s in config/api.py; this middleware does the same for
plain Django views (pages, the SDK features endpoint) so no endpoint answers a bare 500.
"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from kombu.exceptions import OperationalError as BrokerError

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."
BROKER_UNAVAILABLE = (
    "The task broker is unavailable, so the analysis could not be queued; the scheduled "
    "analysis catches up when it is back. Assignment and ingestion are not affected."
)
RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> bool:
    """Whether the error means "cannot reach the database" rather than a bad query."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    )


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


class SecurityHeadersMiddleware:
    """Content-Security-Policy on every response, and Secure cookies on every HTTPS request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.ABACUS_CSP_OVERRIDES.get(
            request.path, settings.ABACUS_CONTENT_SECURITY_POLICY
        )
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.is_secure():
            # Whatever SECURE_COOKIES says: a cookie set over HTTPS never travels over HTTP.
            for name in (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME):
                if name in response.cookies:
                    response.cookies[name]["secure"] = True
        return response


class DatabaseUnavailableMiddleware:
    """A database (or broker) outage in a plain Django view becomes a 503 that says so."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if database_unavailable(exc):
            message = DATABASE_UNAVAILABLE
        elif isinstance(exc, BrokerError):
            message = BROKER_UNAVAILABLE
        else:
            return None
        logger.error("%s %s: %s (%s)", request.method, request.path, message, exc)
        return unavailable_response(request, message)


def unavailable_response(request: HttpRequest, message: str) -> HttpResponse:
    """503 with the message as JSON for API clients, or as a small page for people."""
    if wants_json(request):
        response: HttpResponse = JsonResponse({"detail": message}, status=503)
    else:
        response = HttpResponse(
            "<!doctype html><title>abacus: temporarily unavailable</title>"
            f"<h1>Temporarily unavailable</h1><p>{escape(message)}</p>",
            status=503,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def bad_parameter_response(request: HttpRequest, name: str, message: str) -> HttpResponse:
    """A 400 naming the parameter: JSON for the API, a short page for people."""
    if wants_json(request):
        return JsonResponse({"detail": message, "field": name}, status=400)
    return HttpResponse(
        f"<!doctype html><title>Bad request</title><h1>Bad request</h1><p>{escape(message)}</p>",
        status=400,
    )


class NulCharacterMiddleware:
    """A NUL character in a query parameter or a path segment is a 400 naming it.

    PostgreSQL text cannot hold NUL, so such a value would fail the first query that uses it
    (a 500). Bodies need no check here: every Django form and DRF serializer CharField already
    refuses NUL with a message naming its field.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: tuple,
        view_kwargs: dict,
    ) -> HttpResponse | None:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in v for v in values):
                shown = name.replace("\x00", "\\x00")
                return bad_parameter_response(
                    request,
                    shown,
                    f"The query parameter '{shown}' must not contain NUL characters.",
                )
        for name, value in view_kwargs.items():
            if isinstance(value, str) and "\x00" in value:
                return bad_parameter_response(
                    request, name, f"The path parameter '{name}' must not contain NUL characters."
                )
        if "\x00" in request.path_info:
            return bad_parameter_response(
                request, "path", "The path must not contain NUL characters."
            )
        return None
