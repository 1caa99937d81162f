"""Login throttling glue for django-axes: what a locked-out client sees (who the client is:
core.client_address).

A locked-out login answers 429 with Retry-After: JSON (`{"detail": ...}`) under /api/, the
login page with the message everywhere else (the admin's login included).
"""

import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

LOCKED_OUT = (
    "Too many failed logins for this account or from this address. Try again in {minutes} minutes."
)


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    seconds = max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds()))
    message = LOCKED_OUT.format(minutes=math.ceil(seconds / 60))
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(seconds)
    return response
