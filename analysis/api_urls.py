"""Results API routes, under /api/v1/."""

from django.urls import path

from analysis import apis, holdout_apis, time_view_apis

P = "projects/<slug:project>"
E = f"{P}/experiments/<slug:key>"

urlpatterns = [
    path(f"{E}/results", apis.ResultsApi.as_view(), name="results"),
    path(f"{E}/results/history", apis.ResultsHistoryApi.as_view(), name="results-history"),
    path(f"{E}/results/daily", time_view_apis.DailyLiftApi.as_view(), name="results-daily"),
    path(f"{E}/results/novelty", time_view_apis.NoveltyApi.as_view(), name="results-novelty"),
    path(f"{E}/results/breakdown", apis.ResultsBreakdownApi.as_view(), name="results-breakdown"),
    path(f"{E}/analyze", apis.AnalyzeApi.as_view(), name="analyze"),
    path(f"{E}/export", apis.ExperimentExportApi.as_view(), name="experiment-export"),
    path(f"{P}/library/", apis.LibraryApi.as_view(), name="library"),
    path(
        f"{P}/holdouts/<int:holdout_id>/results",
        holdout_apis.HoldoutResultsApi.as_view(),
        name="holdout-results-api",
    ),
    path(
        f"{P}/holdouts/<int:holdout_id>/analyze",
        holdout_apis.HoldoutAnalyzeApi.as_view(),
        name="holdout-analyze-api",
    ),
    path(f"{P}/results/export", apis.ProjectExportApi.as_view(), name="results-export"),
]
