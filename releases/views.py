"""Web pages of guarded releases, under /p/<project>/releases/: the list, the new-release form,
the monitoring page with its JSON data (refreshed every 15 s while live) and the
pause / resume / advance / roll back actions.

Every page resolves the project for the user (404 for a project they are not in) and checks the
role (403 with a page that says why). Views parse a form, call one service (releases.services)
and render: a DomainError is shown next to the field it names (or as a message on the release
page), a PermissionDenied (production releases need an admin) is a 403 that says so. Each
action asks for confirmation first: without ``confirmed=yes`` the answer is the question
(releases.js asks on the page itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils.html import escape
from django.views.decorators.http import require_POST, require_safe

from core.errors import DomainError
from experiments.views.pages import Page, project_page
from flags.selectors import environment_get, environments_for_project, flag_get

from . import page as page_data
from . import selectors, services
from .forms import KIND_STEPS, ActionForm, ReleaseEditor
from .models import LIVE_STATUSES, ReleaseKind, ReleaseStatus

PER_PAGE = 50
STATUS_FILTERS = ["live", *ReleaseStatus.values]


def _bad_filter(name: str, message: str) -> HttpResponse:
    """A 400 naming the query parameter (a hand-edited filter URL), never a 500."""
    return HttpResponse(
        f"<!doctype html><title>Bad request</title><h1>Bad request</h1><p>{escape(name)}: "
        f"{escape(message)}</p>",
        status=400,
    )


def _may_act(page: Page, production: bool) -> bool:
    """Whether to show the action buttons (the services decide; this only hides what they
    would refuse): editors and admins, and only admins in production."""
    return page.can("edit") and (not production or page.role == "admin")


@project_page("read")
@require_safe
def release_list(request: HttpRequest, page: Page) -> HttpResponse:
    environments = list(environments_for_project(page.project))
    keys = [e.key for e in environments]
    default = "production" if "production" in keys else (keys[0] if keys else "all")
    env = request.GET.get("env") or default
    if env != "all" and env not in keys:
        return _bad_filter("env", f"No environment '{env}' in this project.")
    status = request.GET.get("status", "")
    if status and status not in STATUS_FILTERS:
        return _bad_filter("status", f"One of: {', '.join(STATUS_FILTERS)} (or empty).")
    releases = selectors.release_list(
        page.project, environment=None if env == "all" else env, status=status or None
    )
    listing = Paginator(releases, PER_PAGE).get_page(request.GET.get("page"))
    return page.render(
        "releases/release_list.html",
        {
            "environments": environments,
            "env": env,
            "status": status,
            "statuses": [("live", "Live (scheduled, running, paused)"), *ReleaseStatus.choices],
            "listing": listing,
            "rows": [(r, page_data.decision_of(r)) for r in listing],
        },
    )


@project_page("edit")
def release_new(request: HttpRequest, page: Page) -> HttpResponse:
    flags = selectors.flags_for_release_form(page.project)
    environments = list(environments_for_project(page.project))
    keys = [e.key for e in environments]
    env = request.GET.get("environment", "")
    kind = request.GET.get("kind", "")
    initial = {
        "flag": request.GET.get("flag", "") if request.GET.get("flag", "") in flags else "",
        "environment": env if env in keys else ("production" if "production" in keys else ""),
        "kind": kind if kind in ReleaseKind.values else ReleaseKind.CANARY,
    }
    editor = ReleaseEditor(
        page.project,
        flags=flags,
        environments=environments,
        data=request.POST or None,
        initial=initial,
    )
    status = 200
    if request.method == "POST" and editor.is_valid():
        data = editor.form.cleaned_data
        try:
            release = services.release_create(
                project=page.project,
                flag=flag_get(page.project, data["flag"]),
                environment=environment_get(page.project, data["environment"]),
                actor=request.user,
                **editor.service_arguments(),
            )
        except PermissionDenied as exc:
            editor.add_error(exc)
            status = 403
        except (DomainError, ValidationError) as exc:
            editor.add_error(exc)
        else:
            percent = selectors.step_percent(release)
            messages.success(
                request,
                f"Release of {release.flag.key} in {release.environment.name} "
                + (
                    f"started at {percent:g}%."
                    if release.status == ReleaseStatus.RUNNING
                    else "scheduled."
                ),
            )
            return redirect("release-detail", project=page.project.slug, release_id=release.pk)
    return page.render(
        "releases/release_form.html",
        {
            "editor": editor,
            "form_data": {
                "flags": flags,
                "kind_steps": {k: list(v) for k, v in KIND_STEPS.items()},
            },
        },
        status=status,
    )


@project_page("read")
@require_safe
def release_detail(request: HttpRequest, page: Page, release_id: int) -> HttpResponse:
    release = selectors.release_get(page.project, release_id)
    data = page_data.release_page(release)
    return page.render(
        "releases/release_detail.html",
        {
            "release": release,
            "data": data,
            "chart_data": data.chart_data,
            "may_act": _may_act(page, release.environment.production),
            "actions": _actions_for(release.status),
        },
    )


@project_page("read")
@require_safe
def release_data(request: HttpRequest, page: Page, release_id: int) -> JsonResponse:
    """The page's data as JSON, for its refresh every 15 s while the release is live."""
    release = selectors.release_get(page.project, release_id)
    response = JsonResponse(page_data.release_page_data(release))
    response["Cache-Control"] = "no-store"
    return response


# -- actions ------------------------------------------------------------------------------------

ACTIONS: dict[str, dict[str, Any]] = {
    "pause": {
        "service": services.release_pause,
        "label": "Pause",
        "done": "Paused: steps do not advance (the monitor still rolls back on harm).",
        "question": "Pause the release? It stays at its current step until resumed.",
        "when": [ReleaseStatus.RUNNING],
        "style": "",
    },
    "resume": {
        "service": services.release_resume,
        "label": "Resume",
        "done": "Resumed: the monitor analyses the step again and advances when it may.",
        "question": "Resume the release? The monitor advances it again when a step passes.",
        "when": [ReleaseStatus.PAUSED],
        "style": "primary",
    },
    "advance": {
        "service": services.release_advance,
        "label": "Advance now",
        "done": "Advanced by hand.",
        "question": "Advance to the next step now, without waiting for the step's minimums? "
        "On the last step this completes the release: everyone gets the new variation.",
        "when": [ReleaseStatus.RUNNING, ReleaseStatus.PAUSED],
        "style": "",
    },
    "rollback": {
        "service": services.release_rollback,
        "label": "Roll back",
        "done": "Rolled back: every unit gets the baseline.",
        "question": "Roll back? Every unit gets the baseline at once, and the release ends.",
        "when": list(LIVE_STATUSES),
        "style": "danger",
    },
}


def _actions_for(status: str) -> list[dict[str, Any]]:
    return [
        {"name": name, **{k: v for k, v in spec.items() if k != "service"}}
        for name, spec in ACTIONS.items()
        if status in spec["when"]
    ]


def _call(service: Callable[..., Any], **arguments: Any) -> tuple[Any, Exception | None]:
    try:
        return service(**arguments), None
    except (DomainError, ValidationError, PermissionDenied) as exc:
        return None, exc


@project_page("edit")
@require_POST
def release_action(request: HttpRequest, page: Page, release_id: int, action: str) -> HttpResponse:
    """Pause, resume, advance or roll back, after a confirmation (the confirm page, or the
    question releases.js shows on the release page)."""
    release = selectors.release_get(page.project, release_id)
    spec = ACTIONS[action]
    form = ActionForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("release-detail", project=page.project.slug, release_id=release.pk)
    if not form.is_confirmed:
        return page.render(
            "releases/confirm.html",
            {"release": release, "action": {"name": action, **spec},
             "reason": form.cleaned_data["reason"]},
        )  # fmt: skip
    _, refused = _call(
        spec["service"], release=release, actor=request.user, reason=form.cleaned_data["reason"]
    )
    if isinstance(refused, PermissionDenied):
        return page.render(
            "releases/refused.html",
            {"release": release, "message": str(refused) or "Your role may not do this."},
            status=403,
        )
    if refused is not None:
        text = refused.message if isinstance(refused, DomainError) else " ".join(refused.messages)
        messages.error(request, text)
    else:
        messages.success(request, spec["done"])
    return redirect("release-detail", project=page.project.slug, release_id=release.pk)
