"""The home page (projects) and a project's settings: members, API keys, webhook."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from core.errors import DomainError
from core.signing import SIGNATURE_HEADER, WEBHOOK_EVENT_HELP
from experiments import forms, services
from experiments.models import ApiKey, Membership
from experiments.selectors import (
    api_keys_for_project,
    audit_log_for_project,
    members_for_project,
    projects_for_user,
)
from experiments.views.pages import Page, project_page


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
            initial={
                "name": project.name,
                "webhook_url": project.webhook_url,
                "require_approval": project.require_approval,
                "event_retention_days": project.event_retention_days,
            }
        ),
        "member_form": forms.MemberAddForm(),
        "api_key_form": forms.ApiKeyForm(project=project),
        "environments": list(project.environments.all()),
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
    form = forms.ApiKeyForm(request.POST, project=page.project)
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
