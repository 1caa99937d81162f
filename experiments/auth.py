"""Service authentication: `Authorization: Bearer <api key>`; the key fixes the project.
People's scripts: `Authorization: Token <key>` (UserTokenAuthentication, django-rest-knox).

Secrets are stored only as SHA-256 hashes and compared in constant time; secrets never reach a
log line. Each process keeps the keys it has seen (`core.cache.ProcessCache`, by prefix) and
looks a key up again whenever the serving generation changes: revoking or rotating a key saves
it, which changes the generation, so a revoked key fails on the next request in every process.
Every request made with a key counts against that key's per-minute rate limit
(ApiKeyRateThrottle).
"""

import hmac
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from core.cache import ProcessCache, count_in_window, counted, generation_with_count
from experiments.models import ApiKey

logger = logging.getLogger(__name__)

# Compared against when the prefix is unknown, so a miss costs the same hash and comparison.
_NO_SUCH_KEY = "0" * 64
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Active keys by prefix, with their project and environment (never a secret).
_active_keys: ProcessCache[ApiKey] = ProcessCache("api keys")


@dataclass
class ServicePrincipal:
    """The request.user of a service call: not a person, just its key."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_superuser: bool = False
    is_staff: bool = False
    is_active: bool = True

    @property
    def project(self):  # noqa: ANN201 - a Project
        return self.api_key.project

    def get_username(self) -> str:
        return f"api-key:{self.api_key.name}"


def authenticate_secret(secret: str) -> ApiKey | None:
    # Imported here: DRF imports this module (DEFAULT_THROTTLE_CLASSES) while it defines APIView,
    # which experiments.services needs.
    from experiments.selectors import api_key_active_by_prefix
    from experiments.services import hash_api_secret

    parts = secret.split("_")
    prefix = parts[1] if len(parts) >= 3 and parts[0] == "abk" else ""
    hashed = hash_api_secret(secret)
    known = _active_keys.peek(prefix) if prefix else None
    limit = settings.ABACUS_RATE_LIMIT_PER_MINUTE
    if known is not None and limit > 0 and hmac.compare_digest(known.hashed_secret, hashed):
        # The secret is a key this process knows (whether it is still active is checked next):
        # read the serving generation and count the request for the limiter in one round trip.
        generation_with_count(_window_key(prefix, time.time()), WINDOW_SECONDS * 2)
    api_key = (
        _active_keys.get_loaded(prefix, lambda: api_key_active_by_prefix(prefix))
        if prefix
        else None
    )
    expected = api_key.hashed_secret if api_key is not None else _NO_SUCH_KEY
    if not hmac.compare_digest(expected, hashed) or api_key is None:
        return None
    _touch(api_key)
    return api_key


def _touch(api_key: ApiKey) -> None:
    """Record last use, at most once a minute per key, so rotations can see a key go idle."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ServicePrincipal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(self.keyword + " "):
            return None
        api_key = authenticate_secret(header[len(self.keyword) + 1 :].strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ServicePrincipal(api_key=api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class UserTokenAuthentication(KnoxTokenAuthentication):
    """A person's API token: `Authorization: Token <key>`.

    django-rest-knox stores only a SHA-512 digest of each token, with an expiry
    (REST_KNOX["TOKEN_TTL"]); an expired token is deleted when it is next presented, and a
    revoked one (deleted: the admin, `manage.py drf_create_token --revoke`) fails on the next
    request. A header that is not UTF-8 is refused like any other invalid token (401).
    """

    def authenticate_credentials(self, token: bytes) -> tuple:
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


class UserTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = UserTokenAuthentication
    name = "TokenAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A person's token: `Authorization: Token <key>` "
            "(`manage.py drf_create_token <user>`).",
        }


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Names the scheme in the OpenAPI schema (registered by being defined)."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A project's API key: `Authorization: Bearer abk_...`.",
        }


def scope_required(scope: str) -> type[permissions.BasePermission]:
    class HasScope(permissions.BasePermission):
        message = f"This API key lacks the '{scope}' scope."

        def has_permission(self, request: Request, view: object) -> bool:
            api_key = request.auth
            return isinstance(api_key, ApiKey) and scope in api_key.scopes

    HasScope.__name__ = f"HasScope_{scope}"
    return HasScope


# --- rate limiting --------------------------------------------------------------------------

WINDOW_SECONDS = 60
# After a cache error, skip the cache for this long instead of failing every request slowly.
CACHE_RETRY_SECONDS = 5.0
_cache_down_until = 0.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int
    retry_after: int


def rate_limit_hit(bucket: str, limit: int, now: float | None = None) -> RateDecision:
    """Count one request in `bucket`'s current fixed one-minute window.

    A fixed window in the shared cache. On Redis with the serving feed, no round trip: counted
    in the process and sent in batches (`core.cache.count_in_window`: a count lags across
    processes by what the others counted in the last 0.2 s); without it, one round trip,
    shared with the serving generation's read when the key was counted in
    `authenticate_secret`. It may let up to twice the limit through across a window boundary.
    If the cache is unreachable the request is allowed (fail open): the limiter protects the
    service, it must never be the reason ingestion stops.
    """
    global _cache_down_until
    now = time.time() if now is None else now
    if now < _cache_down_until:
        return RateDecision(True, 0, 0)
    window = int(now // WINDOW_SECONDS)
    key = _window_key(bucket, now)
    try:
        count = counted(key)  # counted with the request's generation read (authenticate_secret)
        if count is None:
            count = count_in_window(key, WINDOW_SECONDS * 2)
    except Exception as exc:  # noqa: BLE001 - any cache failure: let the request through
        _cache_down_until = now + CACHE_RETRY_SECONDS
        logger.warning("rate limiter: cache unavailable (%s); allowing requests", exc)
        return RateDecision(True, 0, 0)
    retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    return RateDecision(count <= limit, count, retry_after)


def _window_key(bucket: str, now: float) -> str:
    return f"ratelimit:{bucket}:{int(now // WINDOW_SECONDS)}"


class RateLimited(exceptions.Throttled):
    default_detail = "Rate limit exceeded."


class ApiKeyRateThrottle(throttling.BaseThrottle):
    """ABACUS_RATE_LIMIT_PER_MINUTE requests per minute per API key; 429 with Retry-After."""

    def allow_request(self, request: Request, view: object) -> bool:
        api_key = request.auth
        limit = settings.ABACUS_RATE_LIMIT_PER_MINUTE
        if not isinstance(api_key, ApiKey) or limit <= 0:
            return True
        decision = rate_limit_hit(api_key.prefix, limit)
        if decision.allowed:
            return True
        raise RateLimited(
            wait=decision.retry_after,
            detail=f"Rate limit exceeded: this API key may make {limit} requests per minute.",
        )

    def wait(self) -> float | None:
        return None
