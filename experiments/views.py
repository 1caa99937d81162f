"""Web UI for product managers: experiments, metric catalog, project settings.

Every page resolves the project for the user (404 for a project they are not in) and checks
their role (403 with a page that says why). Views parse a form, call one service and render;
a service's DomainError is shown next to the field it names.
"""

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from core.errors import DomainError
from core.signing import SIGNATURE_HEADER, WEBHOOK_EVENT_HELP
from experiments import forms, services
from experiments.models import ApiKey, ExperimentStatus, Membership, Project
from experiments.selectors import (
    ACTIONS_BY_STATUS,
    PERMISSIONS,
    api_keys_for_project,
    audit_log_for_experiment,
    audit_log_for_project,
    experiment_get,
    experiment_status_counts,
    experiments_search,
    members_for_project,
    metric_get,
    metrics_with_usage,
    project_get_for_user,
    projects_for_user,
    ramp_status,
    role_of,
)

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


# --- projects -------------------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = list(projects_for_user(request.user))
    can_create = services.project_creation_allowed(request.user)
    form = forms.ProjectForm(request.POST or None)
    context = {"projects": projects, "form": form, "can_create": can_create}
    if request.method == "POST" and not can_create:
        context["refusal"] = services.PROJECT_CREATION_REFUSED
        return render(request, "experiments/home.html", context, status=403)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(actor=request.user, **form.cleaned_data)
        except (DomainError, ValidationError) as exc:
            forms.add_error_to_form(form, exc)
        else:
            messages.success(request, f"Project {project.name} created; you are its admin.")
            return redirect("experiment-list", project=project.slug)
    elif request.method == "GET" and len(projects) == 1:
        return redirect("experiment-list", project=projects[0].slug)
    return render(request, "experiments/home.html", context)


# --- experiments ----------------------------------------------------------------------------


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


# --- metric catalog -------------------------------------------------------------------------


@project_page("read")
def metric_list(request: HttpRequest, page: Page) -> HttpResponse:
    return page.render(
        "experiments/metric_list.html", {"metrics": metrics_with_usage(page.project)}
    )


@project_page("edit")
def metric_new(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.MetricForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            metric = services.metric_create(
                project=page.project, actor=request.user, **form.service_arguments()
            )
        except (DomainError, ValidationError) as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Metric {metric.key} added to the catalog.")
            return redirect("metric-list", project=page.project.slug)
    return page.render("experiments/metric_form.html", {"form": form, "metric": None})


@project_page("edit")
def metric_edit(request: HttpRequest, page: Page, key: str) -> HttpResponse:
    metric = metric_get(page.project, key)
    usage = next(u for u in metrics_with_usage(page.project) if u.metric.pk == metric.pk)
    initial = {name: getattr(metric, name) for name in forms.MetricForm.base_fields}
    form = forms.MetricForm(
        request.POST or None, initial=initial, metric=metric, frozen=bool(usage.live)
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.metric_update(metric=metric, actor=request.user, **form.service_arguments())
        except (DomainError, ValidationError) as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Metric {metric.key} saved.")
            return redirect("metric-list", project=page.project.slug)
    return page.render(
        "experiments/metric_form.html", {"form": form, "metric": metric, "usage": usage}
    )


@project_page("edit")
@require_POST
def metric_delete(request: HttpRequest, page: Page, key: str) -> HttpResponse:
    metric = metric_get(page.project, key)
    try:
        services.metric_delete(metric=metric, actor=request.user)
    except DomainError as exc:
        messages.error(request, f"Could not delete: {exc.message}")
    else:
        messages.success(request, f"Metric {key} deleted.")
    return redirect("metric-list", project=page.project.slug)


# --- project settings: members and API keys -------------------------------------------------


def _settings_page(
    page: Page,
    *,
    status: int = 200,
    new_secret: str = "",
    webhook_secret: str = "",
    **forms_given: Any,
) -> HttpResponse:
    project = page.project
    context = {
        "settings_form": forms.ProjectSettingsForm(
            initial={"name": project.name, "webhook_url": project.webhook_url}
        ),
        "member_form": forms.MemberAddForm(),
        "api_key_form": forms.ApiKeyForm(),
        "members": members_for_project(project),
        "roles": forms.Role.choices,
        "api_keys": api_keys_for_project(project),
        "audit": audit_log_for_project(project, limit=50),
        "new_secret": new_secret,
        "webhook_secret": webhook_secret,
        "webhook_events": WEBHOOK_EVENT_HELP,
        "signature_header": SIGNATURE_HEADER,
    }
    context.update(forms_given)
    return page.render("experiments/settings.html", context, status=status)


@project_page("manage")
def project_settings(request: HttpRequest, page: Page) -> HttpResponse:
    return _settings_page(page)


@project_page("manage")
@require_POST
def project_settings_update(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.ProjectSettingsForm(request.POST)
    if form.is_valid():
        try:
            services.project_update(project=page.project, actor=request.user, **form.cleaned_data)
        except (DomainError, ValidationError) as exc:
            forms.add_error_to_form(form, exc)
        else:
            messages.success(request, "Project settings saved.")
            return redirect("project-settings", project=page.project.slug)
    return _settings_page(page, settings_form=form)


@never_cache
@project_page("manage")
@require_POST
def webhook_secret_action(request: HttpRequest, page: Page, action: str) -> HttpResponse:
    """Reveal (audited) or rotate the signing secret; rendered, not redirected, so the secret
    is in no URL and in no cached page."""
    if action == "rotate":
        secret = services.project_webhook_secret_rotate(project=page.project, actor=request.user)
        messages.success(request, "New signing secret: deliveries from now on are signed with it.")
    else:
        secret = services.project_webhook_secret_reveal(project=page.project, actor=request.user)
    return _settings_page(page, webhook_secret=secret)


@project_page("manage")
@require_POST
def member_add(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.MemberAddForm(request.POST)
    if form.is_valid():
        try:
            services.membership_add(project=page.project, actor=request.user, **form.cleaned_data)
        except (DomainError, ValidationError) as exc:
            forms.add_error_to_form(form, exc)
        else:
            data = form.cleaned_data
            messages.success(request, f"{data['username']} is now {data['role']}.")
            return redirect("project-settings", project=page.project.slug)
    return _settings_page(page, member_form=form)


def _member(page: Page, username: str) -> Any:
    membership = (
        Membership.objects.filter(project=page.project, user__username=username)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise Http404("No such member.")
    return membership.user


@project_page("manage")
@require_POST
def member_role(request: HttpRequest, page: Page, username: str) -> HttpResponse:
    user = _member(page, username)
    form = forms.MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role.")
    else:
        try:
            services.membership_set(
                project=page.project, user=user, role=form.cleaned_data["role"], actor=request.user
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{username} is now {form.cleaned_data['role']}.")
    return redirect("project-settings", project=page.project.slug)


@project_page("manage")
@require_POST
def member_remove(request: HttpRequest, page: Page, username: str) -> HttpResponse:
    user = _member(page, username)
    try:
        services.membership_remove(project=page.project, user=user, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{username} removed from the project.")
    return redirect("project-settings", project=page.project.slug)


@never_cache
@project_page("manage")
@require_POST
def api_key_create(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            created = services.api_key_create(
                project=page.project, actor=request.user, **form.cleaned_data
            )
        except DomainError as exc:
            forms.add_error_to_form(form, exc)
        else:
            # Rendered, not redirected: the secret is shown this once and never stored.
            return _settings_page(page, new_secret=created.secret, new_key=created.api_key)
    return _settings_page(page, api_key_form=form)


@project_page("manage")
@require_POST
def api_key_revoke(request: HttpRequest, page: Page, key_id: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, project=page.project, pk=key_id)
    services.api_key_revoke(api_key=api_key, actor=request.user)
    messages.success(request, f"API key {api_key.name} revoked; services using it now get 401.")
    return redirect("project-settings", project=page.project.slug)
