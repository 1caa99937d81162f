"""Web pages of guarded releases, under /p/<project>/ like the others."""

from django.urls import path, re_path

from releases import views

P = "p/<slug:project>"
R = f"{P}/releases/<int:release_id>"

urlpatterns = [
    path(f"{P}/releases/", views.release_list, name="release-list"),
    path(f"{P}/releases/new/", views.release_new, name="release-new"),
    path(f"{R}/", views.release_detail, name="release-detail"),
    path(f"{R}/data.json", views.release_data, name="release-data"),
    re_path(
        r"^p/(?P<project>[-\w]+)/releases/(?P<release_id>\d+)/"
        r"(?P<action>pause|resume|advance|rollback)/$",
        views.release_action,
        name="release-action",
    ),
]
