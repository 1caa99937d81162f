"""Results API routes, under /api/v1/."""

from django.urls import path

from analysis import apis

E = "projects/<slug:project>/experiments/<slug:key>"

urlpatterns = [
    path(f"{E}/results", apis.ResultsApi.as_view(), name="results"),
    path(f"{E}/results/history", apis.ResultsHistoryApi.as_view(), name="results-history"),
    path(f"{E}/analyze", apis.AnalyzeApi.as_view(), name="analyze"),
]
