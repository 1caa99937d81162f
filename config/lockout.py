"""Login throttling glue for django-axes: who the client is, and what a locked-out client sees.

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


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address ABACUS_PROXY_COUNT proxies reported in X-Forwarded-For.

    Each proxy appends the address it received the request from, so the client is the entry
    that many places from the right; anything further left was sent by the client itself.
    """
    count = settings.ABACUS_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if count > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR", "")


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
