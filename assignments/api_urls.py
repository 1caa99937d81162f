"""Service API routes (Bearer API keys), under /api/v1/; and removing events (project admins)."""

from django.urls import re_path

from assignments import apis

urlpatterns = [
    re_path(r"^assign/?$", apis.AssignApi.as_view(), name="assign"),
    re_path(r"^assign/bulk/?$", apis.AssignBulkApi.as_view(), name="assign-bulk"),
    re_path(r"^events/?$", apis.EventsApi.as_view(), name="events"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/events/delete/?$",
        apis.EventDeleteApi.as_view(),
        name="events-delete",
    ),
]
