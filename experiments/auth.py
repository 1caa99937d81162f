"""Service authentication: `Authorization: Bearer <api key>`; the key fixes the project."""

import hmac
from dataclasses import dataclass

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from experiments.models import ApiKey
from experiments.selectors import api_key_active_by_prefix
from experiments.services import hash_api_secret


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
    parts = secret.split("_")
    if len(parts) < 3 or parts[0] != "abk":
        return None
    api_key = api_key_active_by_prefix(parts[1])
    if api_key is None:
        return None
    if not hmac.compare_digest(api_key.hashed_secret, hash_api_secret(secret)):
        return None
    return api_key


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


def scope_required(scope: str) -> type[permissions.BasePermission]:
    class HasScope(permissions.BasePermission):
        message = f"This API key lacks the '{scope}' scope."

        def has_permission(self, request: Request, view: object) -> bool:
            api_key = request.auth
            return isinstance(api_key, ApiKey) and scope in api_key.scopes

    HasScope.__name__ = f"HasScope_{scope}"
    return HasScope
