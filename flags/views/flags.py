"""The flag list with its per-environment toggles (the kill switch), and the flag form."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from experiments.views.pages import Page, project_page
from flags import forms, services
from flags.models import Flag
from flags.selectors import environment_get, flag_get
from flags.selectors import flag_list as flags_search
from flags.views.common import REFUSALS, call, report_change
from flags.views.reads import environments_of, flag_rows, stale_reasons


@project_page("read")
def flag_list(request: HttpRequest, page: Page) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    tag = request.GET.get("tag", "").strip()
    owner = request.GET.get("owner", "").strip()
    archived = request.GET.get("archived") == "1"
    flags = list(
        flags_search(
            page.project, q=q or None, tag=tag or None, owner=owner or None, archived=archived
        )
    )
    environments = environments_of(page.project)
    rows = flag_rows(flags, environments, stale_reasons(page.project))
    all_flags = Flag.objects.filter(project=page.project)
    tags = sorted({t for f in all_flags.only("tags") for t in f.tags or []})
    owners = sorted(set(all_flags.exclude(owner=None).values_list("owner__username", flat=True)))
    return page.render(
        "flags/flag_list.html",
        {
            "rows": rows,
            "environments": environments,
            "q": q,
            "tag": tag,
            "owner": owner,
            "archived": archived,
            "tags": tags,
            "owners": owners,
            "filtered": bool(q or tag or owner),
        },
    )


@project_page("edit")
def flag_new(request: HttpRequest, page: Page) -> HttpResponse:
    editor = forms.FlagEditor(page.project, data=request.POST or None)
    if request.method == "POST" and editor.is_valid():
        try:
            flag = services.flag_create(
                project=page.project, actor=request.user, **editor.service_arguments()
            )
        except REFUSALS as exc:
            editor.add_error(exc)
        else:
            messages.success(
                request, f"Flag {flag.key} created, off in every environment. Add rules below."
            )
            return redirect("flag-detail", project=page.project.slug, flag=flag.key)
    return page.render("flags/flag_form.html", {"editor": editor, "flag": None})


@project_page("edit")
def flag_edit(request: HttpRequest, page: Page, flag: str) -> HttpResponse:
    flag = flag_get(page.project, flag)
    editor = forms.FlagEditor(page.project, flag, data=request.POST or None)
    if request.method == "POST" and editor.is_valid():
        try:
            services.flag_update(flag=flag, actor=request.user, **editor.service_arguments())
        except REFUSALS as exc:
            editor.add_error(exc)
        else:
            messages.success(request, f"Flag {flag.key} saved.")
            return redirect("flag-detail", project=page.project.slug, flag=flag.key)
    return page.render("flags/flag_form.html", {"editor": editor, "flag": flag})


@project_page("edit")
@require_POST
def flag_archive(request: HttpRequest, page: Page, flag: str) -> HttpResponse:
    flag_key, flag = flag, flag_get(page.project, flag)
    archived = request.POST.get("archived") == "1"
    _, done = call(request, services.flag_update, flag=flag, actor=request.user, archived=archived)
    if done:
        messages.success(
            request,
            f"Flag {flag_key} archived: no longer served (SDKs get no value for it)."
            if archived
            else f"Flag {flag_key} restored.",
        )
    return redirect("flag-detail", project=page.project.slug, flag=flag_key)


def _back(request: HttpRequest, page: Page, flag_key: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return f"/p/{page.project.slug}/flags/{flag_key}/"


@project_page("edit")
@require_POST
def flag_toggle(request: HttpRequest, page: Page, flag: str, environment: str) -> HttpResponse:
    """On or off in one environment. Production asks first: without `confirmed` the page
    answers with the question (flags.js asks on the page itself)."""
    flag = flag_get(page.project, flag)
    env = environment_get(page.project, environment)
    enabled = request.POST.get("enabled") == "on"
    if env.production and request.POST.get("confirmed") != "yes":
        return page.render(
            "flags/toggle_confirm.html",
            {
                "flag": flag,
                "environment": env,
                "enabled": enabled,
                "next": _back(request, page, flag.key),
            },
        )
    result, done = call(
        request,
        services.flag_toggle,
        flag=flag,
        environment=env,
        actor=request.user,
        enabled=enabled,
    )
    if done:
        state = "on" if enabled else "off"
        report_change(request, result, f"{flag.key} is {state} in {env.name}.")
    return redirect(_back(request, page, flag.key))
