"""Public browser keys on the beacon endpoint (POST /api/v1/events/beacon?key=<browser key>):
who posts (an environment's browser key, in the query string because navigator.sendBeacon
cannot set headers), from which page (the Origin header, against the environment's allowed
origins), how often (per key and per client address), and the CORS headers of the answer.

CORS is no access control for the beacon: sendBeacon posts text/plain, a "simple" request that
the browser sends without a preflight whatever the answer's headers say. So the origin is
checked on every request, preflight or not, and a refused one stores nothing; the headers only
let an allowed page read the answer. A client outside a browser can claim any Origin: the key's
one capability (posting events of its own project), the small batches and the two rate limits
bound what it can do with a key it read from a page.
"""

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpResponse
from django.utils.cache import patch_vary_headers
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from core.client_address import client_network
from experiments.auth import RateLimited, rate_limit_hit
from experiments.models import Environment
from experiments.selectors import environment_by_browser_key

KEY_PARAMETER = "key"
# How long a browser may cache a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE = 600


@dataclass(frozen=True)
class BrowserPrincipal:
    """The request.user of a beacon: no person, an environment's public key (request.auth is
    the environment). Only the beacon endpoint, which checks no role, ever sees one."""

    environment: Environment
    is_authenticated: bool = True

    def get_username(self) -> str:
        return f"browser-key:{self.environment}"


class BrowserKeyAuthentication(authentication.BaseAuthentication):
    """The environment whose browser key is in the query string; only the beacon endpoint
    uses this, so the key opens nothing else (every other endpoint ignores the parameter)."""

    def authenticate(self, request: Request) -> tuple[BrowserPrincipal, Environment]:
        key = request.query_params.get(KEY_PARAMETER, "")
        if not key:
            raise exceptions.AuthenticationFailed(
                {
                    "detail": "Pass the environment's browser key as ?key=<browser key> "
                    "(project settings, 'Events from browsers').",
                    "field": KEY_PARAMETER,
                }
            )
        environment = environment_by_browser_key(key)
        if environment is None:
            raise exceptions.AuthenticationFailed(
                {
                    "detail": "Unknown or turned-off browser key: use the environment's "
                    "current key (project settings, 'Events from browsers').",
                    "field": KEY_PARAMETER,
                }
            )
        return BrowserPrincipal(environment=environment), environment

    def authenticate_header(self, request: Request) -> str:
        return "BrowserKey"


class AllowedOrigin(permissions.BasePermission):
    """The request's Origin is one of the environment's allowed origins."""

    def has_permission(self, request: Request, view: object) -> bool:
        environment = request.auth
        if not isinstance(environment, Environment):
            return False
        origin = request.headers.get("Origin", "")
        if origin and origin in environment.browser_origins:
            return True
        shown = origin[:200] or "(none)"
        self.message = {
            "detail": f"The origin {shown} may not post with this browser key: add it to the "
            "environment's allowed origins (project settings, 'Events from browsers').",
            "field": "Origin",
        }
        return False


def address_rate_limit(request: Request) -> None:
    """ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE requests per minute per client address (an
    IPv6 client's /64), counted before the key is even looked up; 429 with Retry-After."""
    limit = settings.ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE
    if limit <= 0:
        return
    decision = rate_limit_hit(f"beacon-address:{client_network(request)}", limit)
    if not decision.allowed:
        raise RateLimited(
            wait=decision.retry_after,
            detail=f"Rate limit exceeded: this address may make {limit} requests per minute "
            "to the browser endpoint.",
        )


class BrowserKeyRateThrottle(throttling.BaseThrottle):
    """ABACUS_BROWSER_RATE_LIMIT_PER_MINUTE requests per minute per browser key (all the
    visitors of the pages that use it); 429 with Retry-After."""

    def allow_request(self, request: Request, view: object) -> bool:
        environment = request.auth
        limit = settings.ABACUS_BROWSER_RATE_LIMIT_PER_MINUTE
        if not isinstance(environment, Environment) or limit <= 0:
            return True
        decision = rate_limit_hit(f"browser-key:{environment.browser_key}", limit)
        if decision.allowed:
            return True
        raise RateLimited(
            wait=decision.retry_after,
            detail=f"Rate limit exceeded: this browser key may make {limit} requests per minute.",
        )

    def wait(self) -> float | None:
        return None


def cors_headers(
    response: HttpResponse,
    *,
    environment: Environment | None,
    origin: str,
    preflight: bool = False,
) -> HttpResponse:
    """Access-Control-Allow-Origin echoing the origin only when the environment allows it (never
    `*`, never credentials); a preflight's answer also names the method and header allowed."""
    patch_vary_headers(response, ["Origin"])
    if environment is None or not origin or origin not in environment.browser_origins:
        return response
    response["Access-Control-Allow-Origin"] = origin
    if preflight:
        response["Access-Control-Allow-Methods"] = "POST"
        response["Access-Control-Allow-Headers"] = "Content-Type"
        response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response
