"""REST API routes of guarded releases, under /api/v1/ (docs/releases.md "REST API")."""

from django.urls import path, re_path

from releases import apis

P = "projects/<slug:project>"

urlpatterns = [
    path(f"{P}/releases/", apis.ReleaseListApi.as_view(), name="releases"),
    path(f"{P}/releases/<int:release_id>/", apis.ReleaseDetailApi.as_view(), name="release"),
    path(
        f"{P}/releases/<int:release_id>/checks/",
        apis.ReleaseChecksApi.as_view(),
        name="release-checks",
    ),
    re_path(
        r"^projects/(?P<project>[-\w]+)/releases/(?P<release_id>[0-9]+)/"
        r"(?P<action>start|pause|resume|advance|rollback)/?$",
        apis.ReleaseActionApi.as_view(),
        name="release-action",
    ),
]
