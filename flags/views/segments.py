"""Segments: the list with where each is used, the create and edit form, delete."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from experiments.forms import add_error_to_form
from experiments.models import Segment
from experiments.selectors import audit_log_for_target
from experiments.views.pages import Page, project_page
from flags import forms, services
from flags.selectors import segment_get, segment_usage
from flags.views.common import REFUSALS, call, refusal_text


@project_page("read")
def segment_list(request: HttpRequest, page: Page) -> HttpResponse:
    usage = segment_usage(page.project)
    rows = [
        {"segment": s, "used_by": usage.get(s.key, [])}
        for s in Segment.objects.filter(project=page.project)
    ]
    return page.render("flags/segment_list.html", {"rows": rows})


def _save(page: Page, form: forms.SegmentForm, segment: Segment | None) -> Segment | None:
    data = dict(form.cleaned_data)
    try:
        if segment is None:
            return services.segment_create(project=page.project, actor=page.request.user, **data)
        data.pop("key", None)
        return services.segment_update(segment=segment, actor=page.request.user, **data)
    except REFUSALS as exc:
        if hasattr(exc, "field") or hasattr(exc, "error_dict"):
            add_error_to_form(form, exc)
        else:
            form.add_error(None, refusal_text(exc))
    return None


def _form_page(request: HttpRequest, page: Page, segment: Segment | None) -> HttpResponse:
    initial = {}
    if segment is not None:
        initial = {
            "key": segment.key,
            "name": segment.name,
            "description": segment.description,
            "condition": segment.condition,
            "include": "\n".join(segment.include or []),
            "exclude": "\n".join(segment.exclude or []),
        }
    form = forms.SegmentForm(request.POST or None, initial=initial, editing=segment is not None)
    if request.method == "POST" and form.is_valid():
        saved = _save(page, form, segment)
        if saved is not None:
            messages.success(request, f"Segment {saved.key} saved.")
            return redirect("segment-list", project=page.project.slug)
    usage = segment_usage(page.project).get(segment.key, []) if segment else []
    audit = audit_log_for_target(page.project, f"segment:{segment.key}") if segment else []
    return page.render(
        "flags/segment_form.html",
        {"form": form, "segment": segment, "used_by": usage, "audit": audit},
    )


@project_page("edit")
def segment_new(request: HttpRequest, page: Page) -> HttpResponse:
    return _form_page(request, page, None)


@project_page("read")
def segment_edit(request: HttpRequest, page: Page, segment: str) -> HttpResponse:
    segment_key, segment = segment, segment_get(page.project, segment)
    if request.method == "POST" and not page.can("edit"):
        messages.error(request, "Your role may only read segments.")
        return redirect("segment-edit", project=page.project.slug, segment=segment_key)
    return _form_page(request, page, segment)


@project_page("edit")
@require_POST
def segment_delete(request: HttpRequest, page: Page, segment: str) -> HttpResponse:
    segment_key, segment = segment, segment_get(page.project, segment)
    _, done = call(request, services.segment_delete, segment=segment, actor=request.user)
    if done:
        messages.success(request, f"Segment {segment_key} deleted.")
        return redirect("segment-list", project=page.project.slug)
    return redirect("segment-edit", project=page.project.slug, segment=segment_key)
