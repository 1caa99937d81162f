"""The results page (server-rendered from the latest snapshot) and its refresh action."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from analysis.selectors import latest_run, latest_snapshot, snapshot_json
from analysis.services import analysis_enqueue
from experiments.selectors import experiment_get, project_get_for_user, role_of


@login_required
def results_page(request: HttpRequest, project: str, key: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    experiment = experiment_get(proj, key)
    snapshot = latest_snapshot(experiment)
    return render(
        request,
        "analysis/results.html",
        {
            "project": proj,
            "experiment": experiment,
            "role": role_of(request.user, proj),
            "snapshot": snapshot,
            "results": snapshot_json(snapshot) if snapshot else None,
            "last_run": latest_run(experiment),
        },
    )


@login_required
@require_POST
def analyze_now(request: HttpRequest, project: str, key: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    experiment = experiment_get(proj, key)
    with transaction.atomic():
        analysis_enqueue(experiment, "web")
    messages.info(request, "Analysis queued; the page shows the new snapshot when it lands.")
    return redirect("experiment-results", project=project, key=key)
