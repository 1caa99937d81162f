"""The DRF exception handler: domain errors (core.errors) and outages as clear HTTP answers."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.middleware import (
    BROKER_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_SECONDS,
    database_unavailable,
)
from core.errors import DomainError


def _authenticate_header(context: dict[str, Any]) -> str | None:
    """The scheme to challenge in WWW-Authenticate, among the view's authenticators.

    DRF asks only the first authenticator; with session authentication first (it has no
    challenge) a bad or missing credential became a 403. Any unusable credential is a 401.
    """
    request = context.get("request")
    presented = (request.META.get("HTTP_AUTHORIZATION", "") if request else "").split(" ")[0]
    headers = [
        header
        for authenticator in getattr(request, "authenticators", None) or ()
        if (header := authenticator.authenticate_header(request))
    ]
    # The scheme the client tried, if the view takes it; otherwise the first one.
    for header in headers:
        if header.lower() == presented.lower():
            return header
    return headers[0] if headers else None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        header = getattr(exc, "auth_header", None) or _authenticate_header(context)
        if header:
            exc.status_code = status.HTTP_401_UNAUTHORIZED
            exc.auth_header = header
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "message_dict"):
            return Response(exc.message_dict, status=status.HTTP_400_BAD_REQUEST)
        return Response({"detail": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DatabaseError) and database_unavailable(exc):
        return Response(
            {"detail": DATABASE_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, KombuOperationalError):
        return Response(
            {"detail": BROKER_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return drf_exception_handler(exc, context)
