"""A flag's page: its state and rules per environment, "what would unit X get, and why",
scheduled changes, evaluation counts and the audit log; the scheduled-change actions."""

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from experiments.selectors import audit_log_for_target
from experiments.views.pages import Page, project_page
from flags import forms, services
from flags.selectors import environment_get, flag_get, scheduled_change_get
from flags.selectors import scheduled_changes_for_flag as scheduled_changes
from flags.views.common import call
from flags.views.reads import EnvironmentState as State
from flags.views.reads import configs_of, environments_of, preview, usage_of, variation_keys


def _rule_rows(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules with their condition as JSON text and their weights as percentages."""
    rows = []
    for rule in rules or []:
        weights = [(k, round(float(s) * 100, 6)) for k, s in (rule.get("weights") or {}).items()]
        rows.append(
            {
                **rule,
                "condition_json": json.dumps(rule["condition"], sort_keys=True)
                if rule.get("condition")
                else "",
                "percents": weights,
            }
        )
    return rows


def _flag_page(page: Page, key: str, **extra: Any) -> HttpResponse:
    request = page.request
    flag = flag_get(page.project, key)
    environments = environments_of(page.project)
    configs = configs_of(flag)
    chosen = request.GET.get("env") or (environments[0].key if environments else "")
    tabs = [State(e, configs.get(e.pk)) for e in environments]
    current = next((t for t in tabs if t.environment.key == chosen), tabs[0] if tabs else None)
    values = {v["key"]: forms.value_text(flag.type, v["value"]) for v in flag.variations or []}
    preview_form = forms.PreviewForm(request.GET if "unit_id" in request.GET else None)
    previews = None
    if preview_form.is_bound and preview_form.is_valid():
        attributes = {**preview_form.cleaned_data["attributes"]}
        attributes["id"] = preview_form.cleaned_data["unit_id"]
        previews = preview(flag, environments, attributes)
    context = {
        "flag": flag,
        "tabs": tabs,
        "current": current,
        "rules": _rule_rows(current.config.rules if current and current.config else []),
        "values": values,
        "variation_values": [(k, values[k]) for k in variation_keys(flag)],
        "preview_form": preview_form,
        "previews": previews,
        "schedule_form": forms.ScheduleForm(
            environments=environments,
            initial={"environment": current.environment.key if current else ""},
        ),
        "scheduled": scheduled_changes(flag).order_by("-status", "at")[:50],
        "usage": usage_of(flag, environments),
        "audit": audit_log_for_target(page.project, f"flag:{flag.key}"),
        "pending_requests": flag.change_requests.filter(status="pending").select_related(
            "environment", "requested_by"
        ),
    }
    context.update(extra)
    return page.render("flags/flag_detail.html", context)


@project_page("read")
def flag_detail(request: HttpRequest, page: Page, flag: str) -> HttpResponse:
    return _flag_page(page, flag)


@project_page("edit")
@require_POST
def scheduled_change_create(request: HttpRequest, page: Page, flag: str) -> HttpResponse:
    flag_key, flag = flag, flag_get(page.project, flag)
    form = forms.ScheduleForm(request.POST, environments=environments_of(page.project))
    if not form.is_valid():
        for name, errors in form.errors.items():
            label = form.fields[name].label or name if name in form.fields else "Schedule"
            messages.error(request, f"{str(label).capitalize()}: {' '.join(errors)}")
        return redirect("flag-detail", project=page.project.slug, flag=flag_key)
    environment = environment_get(page.project, form.cleaned_data["environment"])
    scheduled, done = call(
        request,
        services.scheduled_change_create,
        flag=flag,
        environment=environment,
        actor=request.user,
        at=form.cleaned_data["at"],
        change=form.change(),
        note=form.cleaned_data["note"],
    )
    if done:
        messages.success(request, f"Scheduled for {scheduled.at:%Y-%m-%d %H:%M} UTC.")
    return redirect(f"/p/{page.project.slug}/flags/{flag_key}/?env={environment.key}#schedule")


@project_page("edit")
@require_POST
def scheduled_change_cancel(
    request: HttpRequest, page: Page, flag: str, schedule_id: int
) -> HttpResponse:
    flag_key, flag = flag, flag_get(page.project, flag)
    scheduled = scheduled_change_get(flag, schedule_id)
    _, done = call(
        request, services.scheduled_change_cancel, scheduled_change=scheduled, actor=request.user
    )
    if done:
        messages.success(request, "Scheduled change cancelled.")
    return redirect(f"/p/{page.project.slug}/flags/{flag_key}/#schedule")
