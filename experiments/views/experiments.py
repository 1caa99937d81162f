"""Experiment pages: the list, create and edit, the detail page and lifecycle actions."""

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import DomainError
from experiments import forms, services
from experiments.models import ExperimentStatus
from experiments.selectors import (
    ACTIONS_BY_STATUS,
    audit_log_for_experiment,
    experiment_get,
    experiment_status_counts,
    experiments_search,
    ramp_status,
)
from experiments.views.pages import Page, _refusal, percent, project_page


@project_page("read")
def experiment_list(request: HttpRequest, page: Page) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    if status not in ExperimentStatus.values:
        status = ""
    owner = request.GET.get("owner", "")
    experiments = experiments_search(page.project, q=q, status=status, owner=owner)
    counts = experiment_status_counts(page.project)
    statuses = [
        {"value": s.value, "label": s.label, "count": counts.get(s.value, 0)}
        for s in ExperimentStatus
    ]
    return page.render(
        "experiments/experiment_list.html",
        {
            "experiments": experiments,
            "q": q,
            "status": status,
            "owner": owner,
            "statuses": statuses,
            "total": sum(counts.values()),
        },
    )


@project_page("edit")
def experiment_new(request: HttpRequest, page: Page) -> HttpResponse:
    editor = forms.ExperimentEditor(
        page.project, data=request.POST or None, owner=request.user.get_username()
    )
    if request.method == "POST" and editor.is_valid():
        try:
            experiment = services.experiment_create(
                project=page.project, actor=request.user, **editor.service_arguments()
            )
        except (DomainError, ValidationError) as exc:
            editor.add_error(exc)
        else:
            messages.success(
                request, f"Experiment {experiment.key} saved as a draft. Start it when ready."
            )
            return redirect("experiment-detail", project=page.project.slug, key=experiment.key)
    return page.render("experiments/experiment_form.html", {"editor": editor, "experiment": None})


@project_page("edit")
def experiment_edit(request: HttpRequest, page: Page, key: str) -> HttpResponse:
    experiment = experiment_get(page.project, key)
    if experiment.status in services.FINISHED:
        messages.error(request, f"A {experiment.get_status_display().lower()} experiment is final.")
        return redirect("experiment-detail", project=page.project.slug, key=key)
    editor = forms.ExperimentEditor(page.project, experiment, data=request.POST or None)
    if request.method == "POST" and editor.is_valid():
        try:
            services.experiment_update(
                experiment=experiment, actor=request.user, **editor.service_arguments()
            )
        except (DomainError, ValidationError) as exc:
            editor.add_error(exc)
        else:
            messages.success(request, "Changes saved.")
            return redirect("experiment-detail", project=page.project.slug, key=key)
    return page.render(
        "experiments/experiment_form.html", {"editor": editor, "experiment": experiment}
    )


@project_page("read")
def experiment_detail(request: HttpRequest, page: Page, key: str) -> HttpResponse:
    experiment = experiment_get(page.project, key)
    ramp = ramp_status(experiment)
    next_coverage = ramp.next_coverage if ramp and ramp.next_coverage else None
    if next_coverage is None:
        next_coverage = min(1.0, round(experiment.coverage * 2, 4))
    return page.render(
        "experiments/experiment_detail.html",
        {
            "experiment": experiment,
            "actions": ACTIONS_BY_STATUS.get(experiment.status, ()) if page.can("edit") else (),
            "ramp": ramp,
            "ramp_form": forms.RampForm(initial={"coverage": next_coverage}),
            "conclude_form": forms.ConcludeForm(experiment=experiment),
            "rollback_form": forms.RollbackForm(),
            "audit": audit_log_for_experiment(experiment),
            "variants": [
                (v, "" if v.value is None else json.dumps(v.value, sort_keys=True))
                for v in experiment.variants.all()
            ],
            "experiment_metrics": list(experiment.experiment_metrics.all()),
            "coverage_pct": percent(experiment.coverage),
            "mde_pct": percent(experiment.mde) if experiment.mde else "",
            "targeting_json": (
                json.dumps(experiment.targeting, indent=2) if experiment.targeting else ""
            ),
        },
    )


LIFECYCLE_DONE = {
    "start": "Started: units are being assigned now.",
    "pause": "Paused: every unit gets the control until you resume.",
    "resume": "Resumed.",
    "ramp": "Coverage raised.",
    "conclude": "Concluded.",
    "rollback": "Rolled back: every unit gets the control.",
}


@project_page("edit")
@require_POST
def experiment_action(request: HttpRequest, page: Page, key: str, action: str) -> HttpResponse:
    experiment = experiment_get(page.project, key)
    arguments: dict[str, Any] = {}
    form = None
    if action == "ramp":
        form = forms.RampForm(request.POST)
    elif action == "conclude":
        form = forms.ConcludeForm(request.POST, experiment=experiment)
    elif action == "rollback":
        form = forms.RollbackForm(request.POST)
    if form is not None:
        if not form.is_valid():
            for field, errors in form.errors.items():
                label = form.fields[field].label if field in form.fields else ""
                messages.error(request, f"{label or 'Input'}: {' '.join(errors)}")
            return redirect("experiment-detail", project=page.project.slug, key=key)
        arguments = dict(form.cleaned_data)
    detail = reverse("experiment-detail", kwargs={"project": page.project.slug, "key": key})
    try:
        if action == "delete":
            services.experiment_delete(experiment=experiment, actor=request.user)
            messages.success(request, f"Draft {key} deleted.")
            return redirect("experiment-list", project=page.project.slug)
        service = getattr(services, f"experiment_{action}")
        experiment = service(experiment=experiment, actor=request.user, **arguments)
    except (DomainError, ValidationError) as exc:
        messages.error(request, f"Could not {action}: {_refusal(exc)}")
        return redirect(detail)
    done = LIFECYCLE_DONE[action]
    if action == "ramp":
        done = f"Coverage raised to {experiment.coverage:.0%}."
    elif action == "conclude":
        done = f"Concluded: {experiment.decision_variant} is the decision."
    messages.success(request, done)
    return redirect(detail)
