"""``{% notifications_section %}``: the notifications section of the project settings page,
rendered by this app so the settings page (experiments) needs no import of it."""

from typing import Any

from django import template

from notifications.views import section_context

register = template.Library()


@register.inclusion_tag("notifications/_section.html", takes_context=True)
def notifications_section(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    return {
        **section_context(
            context["project"],
            request.user,
            can_manage=bool(context.get("can_manage")),
            back="settings",
        ),
        "csrf_token": context.get("csrf_token"),
        "request": request,
        "user": request.user,
    }
