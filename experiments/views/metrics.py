"""The metric catalog's pages."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from core.errors import DomainError
from experiments import forms, services
from experiments.selectors import metric_get, metrics_with_usage
from experiments.views.pages import Page, project_page


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
