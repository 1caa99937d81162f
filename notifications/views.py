"""The notifications page (every member: the project's channels and their own email
preferences; admins add and remove channels). The same section appears on the project settings
page (``{% notifications_section %}``); its forms post here."""

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from core.errors import DomainError
from experiments.forms import add_error_to_form
from experiments.views.pages import Page, project_page
from notifications import forms, services
from notifications.models import EVENTS
from notifications.selectors import (
    channel_get,
    channel_target_shown,
    channels_for_project,
    deliveries_for_project,
    preference_for,
)

# Where a form came from, so the answer returns there (never a URL from the request).
BACK = {"settings": "project-settings", "notifications": "project-notifications"}


def section_context(
    page_project: Any, user: Any, *, can_manage: bool, back: str, **forms_given: Any
) -> dict[str, Any]:
    """What the notifications section shows; the page and the settings page's tag share it."""
    preference = preference_for(user, page_project)
    channels = [
        {"channel": c, "target": channel_target_shown(c, full=can_manage)}
        for c in channels_for_project(page_project)
    ]
    context = {
        "project": page_project,
        "notification_channels": channels,
        "channel_form": forms.ChannelForm(),
        "preference_form": forms.PreferenceForm(
            initial={
                "email": preference.email if preference else False,
                "events": preference.events if preference else list(EVENTS),
            }
        ),
        "preference_saved": preference is not None,
        "my_address": getattr(user, "email", ""),
        "can_manage": can_manage,
        "back": back,
        "deliveries": deliveries_for_project(page_project) if can_manage else [],
    }
    context.update(forms_given)
    return context


def _page(page: Page, *, status: int = 200, **forms_given: Any) -> HttpResponse:
    context = section_context(
        page.project,
        page.request.user,
        can_manage=page.can("manage"),
        back="notifications",
        **forms_given,
    )
    return page.render("notifications/notifications.html", context, status=status)


def _back(request: HttpRequest, page: Page) -> HttpResponse:
    name = BACK.get(request.POST.get("back", ""), "project-notifications")
    if name == "project-settings" and not page.can("manage"):
        name = "project-notifications"
    return redirect(name, project=page.project.slug)


@project_page("read")
def notifications_page(request: HttpRequest, page: Page) -> HttpResponse:
    return _page(page)


@project_page("manage")
@require_POST
def channel_create(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.ChannelForm(request.POST)
    if form.is_valid():
        try:
            channel = services.notification_channel_create(
                project=page.project, actor=request.user, **form.cleaned_data
            )
        except (DomainError, ValidationError) as exc:
            add_error_to_form(form, exc)
        else:
            messages.success(request, f"Notification channel {channel.name} added.")
            return _back(request, page)
    return _page(page, status=400, channel_form=form)


@project_page("manage")
@require_POST
def channel_remove(request: HttpRequest, page: Page, channel_id: int) -> HttpResponse:
    channel = channel_get(page.project, channel_id)
    services.notification_channel_delete(channel=channel, actor=request.user)
    messages.success(request, f"Notification channel {channel.name} removed.")
    return _back(request, page)


@project_page("manage")
@require_POST
def channel_toggle(request: HttpRequest, page: Page, channel_id: int) -> HttpResponse:
    channel = channel_get(page.project, channel_id)
    services.notification_channel_update(
        channel=channel, enabled=not channel.enabled, actor=request.user
    )
    state = "on" if channel.enabled else "off"
    messages.success(request, f"Notification channel {channel.name} turned {state}.")
    return _back(request, page)


@project_page("read")
@require_POST
def preference_update(request: HttpRequest, page: Page) -> HttpResponse:
    form = forms.PreferenceForm(request.POST)
    if form.is_valid():
        try:
            services.notification_preference_set(
                user=request.user, project=page.project, **form.cleaned_data
            )
        except (DomainError, ValidationError) as exc:
            add_error_to_form(form, exc)
        else:
            messages.success(request, "Your notification settings are saved.")
            return _back(request, page)
    return _page(page, status=400, preference_form=form)
