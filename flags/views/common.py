"""What the flag pages share: calling a service and turning its refusal into a message."""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest

from core.errors import DomainError
from flags.models import ChangeRequest

REFUSALS = (DomainError, ValidationError, PermissionDenied)


def refusal_text(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc) or "Your role may not make this change."


def call(request: HttpRequest, service: Callable[..., Any], **arguments: Any) -> tuple[Any, bool]:
    """Run a service; a refusal becomes an error message. Returns (result, done)."""
    try:
        return service(**arguments), True
    except REFUSALS as exc:
        messages.error(request, refusal_text(exc))
        return None, False


def report_change(request: HttpRequest, result: Any, done: str) -> None:
    """A production change may come back as a change request: say so instead of `done`."""
    if isinstance(result, ChangeRequest):
        messages.info(
            request,
            f"Change request #{result.pk} created: another admin must approve it before it "
            "applies (Change requests page).",
        )
    else:
        messages.success(request, done)
