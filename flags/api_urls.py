"""User API routes for flags, environments, segments and change requests, under /api/v1/."""

from django.urls import path, re_path

from flags import apis

P = "projects/<slug:project>"
F = f"{P}/flags/<slug:flag>"
ENV = f"{P}/environments/<slug:environment>"

urlpatterns = [
    path(f"{P}/environments/", apis.EnvironmentListApi.as_view(), name="environments"),
    path(f"{ENV}/browser/", apis.EnvironmentBrowserApi.as_view(), name="environment-browser"),
    path(
        f"{ENV}/browser/rotate",
        apis.EnvironmentBrowserRotateApi.as_view(),
        name="environment-browser-rotate",
    ),
    path(f"{P}/segments/", apis.SegmentListApi.as_view(), name="segments"),
    path(f"{P}/segments/<slug:segment>/", apis.SegmentDetailApi.as_view(), name="segment"),
    path(f"{P}/flags/", apis.FlagListApi.as_view(), name="flags"),
    path(f"{F}/", apis.FlagDetailApi.as_view(), name="flag"),
    path(
        f"{F}/environments/<slug:environment>/toggle",
        apis.FlagToggleApi.as_view(),
        name="flag-toggle",
    ),
    path(f"{F}/schedules/", apis.ScheduleListApi.as_view(), name="flag-schedules"),
    path(
        f"{F}/schedules/<int:schedule_id>/",
        apis.ScheduleDetailApi.as_view(),
        name="flag-schedule",
    ),
    path(f"{P}/change-requests/", apis.ChangeRequestListApi.as_view(), name="change-requests"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/change-requests/(?P<request_id>[0-9]+)/"
        r"(?P<action>approve|reject|cancel)/?$",
        apis.ChangeRequestActionApi.as_view(),
        name="change-request-action",
    ),
]
