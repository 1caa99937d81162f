"""What every page shares: resolving the project, checking the role, rendering."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.errors import DomainError
from experiments.models import Project
from experiments.selectors import PERMISSIONS, project_get_for_user, role_of

PERMISSION_WORDS = {
    "read": "view this project",
    "edit": "create or change experiments and metrics",
    "export": "export results",
    "manage": "manage members and API keys",
}


def project_page(permission: str = "read") -> Callable:
    """Resolve `project` for the user and check `permission`; the view gets (request, page)."""

    def decorate(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, project: str, **kwargs: Any) -> HttpResponse:
            proj = project_get_for_user(request.user, project)
            role = role_of(request.user, proj)
            page = Page(request, proj, role or "")
            if permission not in PERMISSIONS.get(role, set()):
                return page.render(
                    "experiments/forbidden.html",
                    {"needed": PERMISSION_WORDS.get(permission, permission)},
                    status=403,
                )
            return view(request, page, **kwargs)

        return wrapped

    return decorate


class Page:
    """The project and the user's role in it, for rendering."""

    def __init__(self, request: HttpRequest, project: Project, role: str) -> None:
        self.request = request
        self.project = project
        self.role = role

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, set())

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "project": self.project,
            "role": self.role,
            "can_edit": self.can("edit"),
            "can_manage": self.can("manage"),
        }
        return render(self.request, template, {**base, **(context or {})}, status=status)


def percent(share: float) -> str:
    """0.05 -> '5%', 0.125 -> '12.5%'."""
    return f"{share * 100:.4g}%"


def _refusal(exc: DomainError | ValidationError) -> str:
    if isinstance(exc, DomainError):
        return exc.message
    return " ".join(exc.messages)
