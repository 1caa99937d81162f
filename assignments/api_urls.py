"""Service API routes (Bearer API keys), under /api/v1/: assignment, events, flag evaluation;
removing events (project admins) and metric baselines from recent events (members)."""

from django.urls import re_path

from assignments import apis, evaluate_api

urlpatterns = [
    re_path(r"^assign/?$", apis.AssignApi.as_view(), name="assign"),
    re_path(r"^assign/bulk/?$", apis.AssignBulkApi.as_view(), name="assign-bulk"),
    re_path(r"^events/?$", apis.EventsApi.as_view(), name="events"),
    re_path(r"^evaluate/?$", evaluate_api.EvaluateApi.as_view(), name="evaluate"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/events/delete/?$",
        apis.EventDeleteApi.as_view(),
        name="events-delete",
    ),
    # A metric's recent baseline from its events, to prefill the power calculator.
    re_path(
        r"^projects/(?P<project>[-\w]+)/metrics/(?P<key>[-\w]+)/baseline/?$",
        apis.MetricBaselineApi.as_view(),
        name="metric-baseline",
    ),
]
