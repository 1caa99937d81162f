"""The results dashboard, its no-JavaScript refresh action, and the overview across experiments.

Pages are rendered on the server from the snapshots; the charts are drawn in the browser by
static/abacus/dashboard.js from the data the page embeds with ``json_script``.
"""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from analysis import results_display
from analysis.breakdown import BreakdownTooSlow, attributes_seen, experiment_breakdown
from analysis.library import DECISIONS, LIBRARY_LIMIT, library_search, library_tags
from analysis.models import Recommendation
from analysis.selectors import (
    experiment_progress,
    experiments_overview,
    health_findings,
    latest_run,
    latest_snapshot,
    metric_groups,
    snapshot_history,
    snapshot_json,
)
from analysis.services import analysis_enqueue
from analysis.time_views import time_views_context
from core.errors import DomainError
from experiments.models import Experiment, ExperimentStatus
from experiments.selectors import experiment_get, project_get_for_user, role_of, user_can


def _breakdown_context(request: HttpRequest, experiment: Experiment) -> dict[str, Any]:
    """The picker (attributes seen) and, when one is picked (?dimension=), its breakdown or
    why there is none."""
    context: dict[str, Any] = {"dimensions": attributes_seen(experiment)}
    dimension = request.GET.get("dimension")
    if dimension is None:
        return context
    context["dimension"] = dimension
    try:
        data = experiment_breakdown(experiment, dimension)
    except (DomainError, BreakdownTooSlow) as exc:
        context["error"] = getattr(exc, "message", str(exc))
        return context
    names = {em.metric.key: em.metric.name for em in experiment.experiment_metrics.all()}
    context["table"] = results_display.breakdown_table(data, names)
    return context


# --- pages --------------------------------------------------------------------------------------


@login_required
def results_page(request: HttpRequest, project: str, key: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    experiment = experiment_get(proj, key)
    snapshot = latest_snapshot(experiment)
    run = latest_run(experiment)
    progress = experiment_progress(experiment, snapshot)
    context: dict[str, Any] = {
        "project": proj,
        "experiment": experiment,
        "role": role_of(request.user, proj),
        "can_export": user_can(request.user, proj, "export"),
        "snapshot": snapshot,
        "last_run": run,
        "progress": progress,
        "findings": health_findings(experiment, snapshot, run),
        "api": {
            "results": reverse("results", kwargs={"project": proj.slug, "key": key}),
            "analyze": reverse("analyze", kwargs={"project": proj.slug, "key": key}),
            "export": reverse("experiment-export", kwargs={"project": proj.slug, "key": key}),
            "breakdown": reverse("results-breakdown", kwargs={"project": proj.slug, "key": key}),
        },
    }
    if snapshot is not None:
        results = snapshot_json(snapshot)
        groups = metric_groups(experiment, results)
        history = snapshot_history(experiment, phase=snapshot.phase)
        context.update(
            results=results,
            banner=results_display.banner(experiment, snapshot, results, progress),
            table=results_display.table(groups),
            arms=results["arms"] if len(results["arms"]) > 1 else [],
            charts=results_display.chart_data(experiment, groups, history, progress),
            history_points=len(history),
            breakdown=_breakdown_context(request, experiment),
        )
        context["time_views"] = time_views_context(
            experiment, [(b.key, b.name, b.role) for g in groups for b in g.metrics]
        )
    return render(request, "analysis/results.html", context)


@login_required
@require_POST
def analyze_now(request: HttpRequest, project: str, key: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    experiment = experiment_get(proj, key)
    with transaction.atomic():
        analysis_enqueue(experiment, "web")
    messages.info(request, "Analysis queued; the page shows the new snapshot when it lands.")
    return redirect("experiment-results", project=project, key=key)


@login_required
def results_overview(request: HttpRequest, project: str) -> HttpResponse:
    proj = project_get_for_user(request.user, project)
    statuses = [s for s in request.GET.getlist("status") if s in ExperimentStatus.values]
    recommendations = [
        r for r in request.GET.getlist("recommendation") if r in (*Recommendation.values, "none")
    ]
    rows = experiments_overview(proj, statuses=statuses, recommendations=recommendations)
    now = timezone.now()
    table = [
        {
            "experiment": r.experiment,
            "recommendation": r.snapshot.recommendation if r.snapshot else None,
            "recommendation_label": (
                r.snapshot.get_recommendation_display() if r.snapshot else "No results yet"
            ),
            "days_running": (
                results_display.days(r.days_running) if r.days_running is not None else "—"
            ),
            "units": f"{r.snapshot.total_units:,}" if r.snapshot else "—",
            "computed_at": r.snapshot.computed_at if r.snapshot else None,
            "healthy": (r.snapshot.health or {}).get("healthy", True) if r.snapshot else True,
            "primary": [
                {
                    **p,
                    "lift": results_display.pct(p["lift_rel"]),
                    "interval": results_display.interval(p["ci_low"], p["ci_high"]),
                    "status_label": results_display.STATUS_LABELS.get(p["status"], p["status"]),
                }
                for p in r.primary
            ],
        }
        for r in rows
    ]
    filtered = bool(statuses or recommendations)
    return render(
        request,
        "analysis/overview.html",
        {
            "project": proj,
            "role": role_of(request.user, proj),
            "can_export": user_can(request.user, proj, "export"),
            "rows": table,
            "now": now,
            "statuses": ExperimentStatus.choices,
            "recommendations": [*Recommendation.choices, ("none", "No results yet")],
            "selected_statuses": statuses,
            "selected_recommendations": recommendations,
            "filtered": filtered,
            "export_keys": ",".join(r["experiment"].key for r in table) if filtered else "",
            "export_url": reverse("results-export", kwargs={"project": proj.slug}),
        },
    )


@login_required
def library_page(request: HttpRequest, project: str) -> HttpResponse:
    """The library of decided experiments, for a PM to read before proposing a test."""
    proj = project_get_for_user(request.user, project)
    q = request.GET.get("q", "").strip()[:200]
    tag = request.GET.get("tag", "").strip()[:50]
    decision = request.GET.get("decision", "")
    if decision not in DECISIONS:
        decision = ""
    entries = library_search(proj, q=q, tag=tag, decision=decision)
    rows = [
        {
            "entry": e,
            "lifts": [
                {
                    "lift": lift,
                    "lift_text": results_display.pct(lift.lift_rel),
                    "interval": results_display.interval(lift.ci_low, lift.ci_high),
                    "status_label": results_display.STATUS_LABELS.get(lift.status, lift.status),
                }
                for lift in e.lifts
            ],
        }
        for e in entries
    ]
    return render(
        request,
        "analysis/library.html",
        {
            "project": proj,
            "role": role_of(request.user, proj),
            "rows": rows,
            "q": q,
            "tag": tag,
            "decision": decision,
            "decisions": list(DECISIONS.items()),
            "tags": library_tags(proj),
            "filtered": bool(q or tag or decision),
            "limit": LIBRARY_LIMIT,
        },
    )
