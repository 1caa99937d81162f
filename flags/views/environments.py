"""Adding an environment (admins), from the project settings page: it gets its own client key
and every flag, off."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from experiments.views.pages import Page, project_page
from flags import services
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
