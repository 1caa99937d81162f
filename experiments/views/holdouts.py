"""The holdout's form and actions (create, edit, start, end, delete). The holdout page, with
the long-term comparison, is analysis's (analysis/views.py)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from core.errors import DomainError
from experiments.forms.holdouts import HoldoutForm
from experiments.holdouts import holdout_get
from experiments.services.holdouts import (
    holdout_create,
    holdout_delete,
    holdout_end,
    holdout_start,
    holdout_update,
)
from experiments.views.pages import Page, project_page

HOLDOUT_ACTIONS = {
    "start": (holdout_start, "started: its units are kept out of experiments and rollouts"),
    "end": (holdout_end, "ended: its units get experiments and rollouts again"),
}


@project_page("edit")
def holdout_new(request: HttpRequest, page: Page) -> HttpResponse:
    form = HoldoutForm(request.POST or None, initial={"share": 5})
    if request.method == "POST" and form.is_valid():
        try:
            holdout = holdout_create(
                project=page.project, actor=request.user, **form.service_arguments()
            )
        except (DomainError, ValidationError) as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Holdout {holdout.name} created (a draft: start it).")
            return redirect("holdout-detail", project=page.project.slug, holdout_id=holdout.pk)
    return page.render("experiments/holdout_form.html", {"form": form, "holdout": None})


@project_page("edit")
def holdout_edit(request: HttpRequest, page: Page, holdout_id: int) -> HttpResponse:
    holdout = holdout_get(page.project, holdout_id)
    form = HoldoutForm(
        request.POST or None, initial=HoldoutForm.initial_for(holdout), holdout=holdout
    )
    if request.method == "POST" and form.is_valid():
        try:
            holdout_update(holdout=holdout, actor=request.user, **form.service_arguments())
        except (DomainError, ValidationError) as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Holdout {holdout.name} saved.")
            return redirect("holdout-detail", project=page.project.slug, holdout_id=holdout.pk)
    return page.render("experiments/holdout_form.html", {"form": form, "holdout": holdout})


@project_page("manage")
@require_POST
def holdout_action(request: HttpRequest, page: Page, holdout_id: int, action: str) -> HttpResponse:
    holdout = holdout_get(page.project, holdout_id)
    service, done = HOLDOUT_ACTIONS[action]
    try:
        service(holdout=holdout, actor=request.user)
    except DomainError as exc:
        messages.error(request, f"Could not {action} the holdout: {exc.message}")
    else:
        messages.success(request, f"Holdout {holdout.name} {done}.")
    return redirect("holdout-detail", project=page.project.slug, holdout_id=holdout.pk)


@project_page("edit")
@require_POST
def holdout_remove(request: HttpRequest, page: Page, holdout_id: int) -> HttpResponse:
    holdout = holdout_get(page.project, holdout_id)
    try:
        holdout_delete(holdout=holdout, actor=request.user)
    except DomainError as exc:
        messages.error(request, f"Could not delete: {exc.message}")
        return redirect("holdout-detail", project=page.project.slug, holdout_id=holdout.pk)
    messages.success(request, f"Holdout {holdout.name} deleted.")
    return redirect("holdout", project=page.project.slug)
