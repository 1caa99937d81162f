"""Service API routes (Bearer API keys), under /api/v1/: assignment, events, flag evaluation;
events from web pages (public browser keys);
removing events (project admins) and metric baselines from recent events (members)."""

from django.urls import re_path

from assignments import apis, beacon_api, evaluate_api

urlpatterns = [
    re_path(r"^assign/?$", apis.AssignApi.as_view(), name="assign"),
    re_path(r"^assign/bulk/?$", apis.AssignBulkApi.as_view(), name="assign-bulk"),
    re_path(r"^events/?$", apis.EventsApi.as_view(), name="events"),
    # Web pages, with an environment's public browser key (docs/clients.md).
    re_path(r"^events/beacon/?$", beacon_api.BeaconEventsApi.as_view(), name="events-beacon"),
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
