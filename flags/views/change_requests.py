"""Change requests: pending production changes with their before and after; approve or reject
(an admin other than the requester), cancel (the requester)."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from experiments.views.pages import Page, project_page
from flags import forms, services
from flags.models import ChangeRequestStatus
from flags.selectors import change_request_get
from flags.views.common import call
from flags.views.reads import change_request_views

DONE = {
    "approve": "Change request #{id} approved and applied.",
    "reject": "Change request #{id} rejected.",
    "cancel": "Change request #{id} cancelled.",
}


@project_page("read")
def change_request_list(request: HttpRequest, page: Page) -> HttpResponse:
    return page.render(
        "flags/change_requests.html",
        {
            "pending": change_request_views(page.project, pending=True),
            "decided": change_request_views(page.project, pending=False, limit=30),
            "review_form": forms.ReviewForm(),
        },
    )


@project_page("edit")
@require_POST
def change_request_action(
    request: HttpRequest, page: Page, request_id: int, action: str
) -> HttpResponse:
    change_request = change_request_get(page.project, request_id)
    form = forms.ReviewForm(request.POST)
    comment = form.cleaned_data["comment"] if form.is_valid() else ""
    if action == "cancel":
        result, done = call(
            request,
            services.change_request_cancel,
            change_request=change_request,
            actor=request.user,
        )
    else:
        result, done = call(
            request,
            services.change_request_review,
            change_request=change_request,
            actor=request.user,
            approve=action == "approve",
            comment=comment,
        )
    if done:
        status = getattr(result, "status", "")
        if action == "approve" and status == ChangeRequestStatus.FAILED:
            messages.error(
                request,
                f"Change request #{request_id} was approved but could not be applied: "
                f"{getattr(result, 'review_comment', '')}",
            )
        else:
            messages.success(request, DONE[action].format(id=request_id))
    return redirect("change-request-list", project=page.project.slug)
