"""Web UI for product managers: experiment list and experiment page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from experiments.selectors import (
    experiments_for_project,
    project_get_for_user,
    projects_for_user,
    role_of,
)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = list(projects_for_user(request.user))
    if len(projects) == 1:
        return redirect("experiment-list", project=projects[0].slug)
    return render(request, "experiments/home.html", {"projects": projects})


@login_required
def experiment_list(request: HttpRequest, project: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    experiments = experiments_for_project(proj)
    return render(
        request,
        "experiments/experiment_list.html",
        {"project": proj, "experiments": experiments, "role": role_of(request.user, proj)},
    )


@login_required
def experiment_detail(request: HttpRequest, project: str, key: str) -> HttpResponse:
    return redirect("experiment-results", project=project, key=key)
