"""Adding an environment (admins), from the project settings page: it gets its own client key
and every flag, off; and its events from browsers (a public browser key, allowed origins)."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from experiments import services as experiment_services
from experiments.views.pages import Page, project_page
from flags import services
from flags.selectors import environment_get
from flags.views.common import call


@project_page("manage")
@require_POST
def environment_create(request: HttpRequest, page: Page) -> HttpResponse:
    key = request.POST.get("key", "").strip()
    name = request.POST.get("name", "").strip() or key
    environment, done = call(
        request,
        services.environment_create,
        project=page.project,
        key=key,
        name=name,
        actor=request.user,
    )
    if done:
        messages.success(
            request,
            f"Environment {environment.key} added, with client key {environment.client_key}; "
            "every flag is off there until turned on.",
        )
    return redirect("project-settings", project=page.project.slug)


@project_page("manage")
@require_POST
def environment_browser(
    request: HttpRequest, page: Page, environment: str, action: str
) -> HttpResponse:
    """Events from browsers (settings page): save the allowed origins (separated by spaces,
    commas or lines), rotate the browser key (which turns it on), or turn it off."""
    found = environment_get(page.project, environment)
    service = experiment_services.environment_browser_update
    if action == "rotate":
        service, changes = experiment_services.environment_browser_key_rotate, {}
    elif action == "off":
        changes = {"enabled": False}
    else:
        changes = {"origins": request.POST.get("origins", "").replace(",", " ").split()}
    _, done = call(request, service, environment=found, actor=request.user, **changes)
    if done:
        messages.success(
            request,
            {
                "origins": f"{found.name}: pages of {len(found.browser_origins)} origin(s) may "
                "post events.",
                "rotate": f"{found.name}: new browser key {found.browser_key}; the old one is "
                "refused.",
                "off": f"{found.name}: browser key removed; pages using it are refused.",
            }[action],
        )
    return redirect(reverse("project-settings", args=[page.project.slug]) + "#browser-events")
