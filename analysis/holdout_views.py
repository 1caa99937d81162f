"""The holdout page (/p/<project>/holdout/): the holdout, its actions, and the long-term
comparison from the stored snapshots; "Analyze now" queues a run (the worker computes)."""

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from analysis.dispatch import enqueue_holdout_run
from analysis.holdout_results import (
    display_rows,
    history_lifts,
    holdout_history,
    holdout_latest,
)
from analysis.holdouts import ALPHA, TUNING_N
from experiments.holdouts import holdout_current, holdout_get, holdouts_for_project
from experiments.models import Holdout
from experiments.views.pages import Page, percent, project_page


def _render(page: Page, holdout: Holdout | None) -> HttpResponse:
    latest = holdout_latest(holdout) if holdout is not None else None
    rows = latest.metrics if latest is not None else []
    history = holdout_history(holdout) if holdout is not None else []
    metric_keys = [r["metric"] for r in rows]
    return page.render(
        "analysis/holdout.html",
        {
            "holdout": holdout,
            "holdouts": list(holdouts_for_project(page.project)),
            "share": percent(holdout.share) if holdout is not None else None,
            "latest": latest,
            "rows": display_rows(rows),
            "history": history_lifts(history, metric_keys),
            "metric_keys": metric_keys,
            "confidence": percent(1 - ALPHA),
            "tuning_n": TUNING_N,
        },
    )


@project_page("read")
def holdout_page(request: HttpRequest, page: Page) -> HttpResponse:
    return _render(page, holdout_current(page.project))


@project_page("read")
def holdout_detail(request: HttpRequest, page: Page, holdout_id: int) -> HttpResponse:
    return _render(page, holdout_get(page.project, holdout_id))


@project_page("read")
@require_POST
def holdout_analyze_now(request: HttpRequest, page: Page, holdout_id: int) -> HttpResponse:
    holdout = holdout_get(page.project, holdout_id)
    if holdout.started_at is None:
        messages.error(request, "The holdout has not started: there is nothing to compare yet.")
    else:
        transaction.on_commit(lambda: enqueue_holdout_run(holdout.pk))
        messages.info(request, "Comparison queued; the page shows it when it lands.")
    return redirect("holdout-detail", project=page.project.slug, holdout_id=holdout.pk)
