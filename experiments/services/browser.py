"""Events from browsers: an environment's public browser key and the origins it serves.

The key is public (it is written into web pages), so it can do one thing only: post events of
its environment's project through POST /api/v1/events/beacon, from pages of the listed
origins. docs/clients.md "Events from browsers" and docs/operations.md say how it is used.
"""

from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.errors import DomainError
from experiments.models import Environment, new_browser_key
from experiments.services.audit import audit_log_record

MAX_ORIGINS = 50
MAX_ORIGIN_LENGTH = 200
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_origin(text: Any, field: str = "origins") -> str:
    """One origin as browsers send it in the Origin header: ``scheme://host[:port]``, http or
    https, lower case, without the scheme's default port, an IDN host in its ASCII form."""
    if not isinstance(text, str) or not text.strip():
        raise DomainError("Each origin is a non-empty string, e.g. https://shop.example.", field)
    text = text.strip()
    shown = text[:MAX_ORIGIN_LENGTH]
    if len(text) > MAX_ORIGIN_LENGTH:
        raise DomainError(f"The origin '{shown}…' is longer than {MAX_ORIGIN_LENGTH}.", field)
    if text in ("*", "null"):
        raise DomainError(
            f"'{text}' is not allowed: list each site's origin, e.g. https://shop.example.", field
        )
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname or ""
    except ValueError:
        parts, port, host = None, None, ""
    if (
        parts is None
        or parts.scheme.lower() not in _DEFAULT_PORTS
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or any(c in host for c in "*/\\ \x00")
    ):
        raise DomainError(
            f"'{shown}' is not an origin: write scheme://host[:port] with http or https and "
            "nothing after it, e.g. https://shop.example or http://localhost:3000.",
            field,
        )
    scheme = parts.scheme.lower()
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise DomainError(f"'{shown}' has a host name that is not valid.", field) from None
    if ":" in host:  # an IPv6 address, written in brackets in an origin
        host = f"[{host}]"
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{host.lower()}{suffix}"


def check_origins(origins: Any, field: str = "origins") -> list[str]:
    """The allowed origins, each checked and normalised, duplicates dropped, in order."""
    if not isinstance(origins, list | tuple):
        raise DomainError('Origins are a list, e.g. ["https://shop.example"].', field)
    checked = list(dict.fromkeys(check_origin(origin, field) for origin in origins))
    if len(checked) > MAX_ORIGINS:
        raise DomainError(
            f"At most {MAX_ORIGINS} origins per environment (got {len(checked)}).", field
        )
    return checked


def _state(environment: Environment) -> dict[str, Any]:
    return {
        "enabled": environment.browser_key is not None,
        "origins": list(environment.browser_origins),
    }


@transaction.atomic
def environment_browser_update(
    *,
    environment: Environment,
    origins: list[str] | None = None,
    enabled: bool | None = None,
    actor: AbstractBaseUser | None = None,
) -> Environment:
    """Set the origins whose pages may post events with the environment's browser key, and
    turn the key on (a new key) or off (the key stops working at once). Unchanged when None."""
    before = _state(environment)
    if origins is not None:
        environment.browser_origins = check_origins(origins)
    if enabled is True and environment.browser_key is None:
        environment.browser_key = new_browser_key()
    elif enabled is False:
        environment.browser_key = None
    after = _state(environment)
    if after != before:
        environment.full_clean()
        environment.save(update_fields=["browser_key", "browser_origins"])
        audit_log_record(
            project=environment.project,
            action="environment.browser.update",
            target=f"environment:{environment.key}",
            actor=actor,
            before=before,
            after=after,
        )
    return environment


@transaction.atomic
def environment_browser_key_rotate(
    *, environment: Environment, actor: AbstractBaseUser | None = None
) -> Environment:
    """A new browser key for the environment (turning browser events on if they were off);
    the old key is refused from the next request on."""
    environment.browser_key = new_browser_key()
    environment.full_clean()
    environment.save(update_fields=["browser_key"])
    audit_log_record(
        project=environment.project,
        action="environment.browser.rotate_key",
        target=f"environment:{environment.key}",
        actor=actor,
        after={"key_prefix": environment.browser_key[:8]},
    )
    return environment
