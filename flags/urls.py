"""Web pages of flags, segments and change requests, under /p/<project>/ like the others."""

from django.urls import path, re_path

from flags import views

P = "p/<slug:project>"
F = f"{P}/flags/<slug:flag>"

urlpatterns = [
    path(f"{P}/flags/", views.flag_list, name="flag-list"),
    path(f"{P}/flags/new/", views.flag_new, name="flag-new"),
    path(f"{F}/", views.flag_detail, name="flag-detail"),
    path(f"{F}/edit/", views.flag_edit, name="flag-edit"),
    path(f"{F}/archive/", views.flag_archive, name="flag-archive"),
    path(f"{F}/environments/<slug:environment>/toggle/", views.flag_toggle, name="flag-toggle"),
    path(f"{F}/environments/<slug:environment>/rules/", views.flag_rules, name="flag-rules"),
    path(f"{F}/schedule/", views.scheduled_change_create, name="scheduled-change-create"),
    path(
        f"{F}/schedule/<int:schedule_id>/cancel/",
        views.scheduled_change_cancel,
        name="scheduled-change-cancel",
    ),
    path(f"{P}/environments/new/", views.environment_create, name="environment-create"),
    re_path(
        r"^p/(?P<project>[-\w]+)/environments/(?P<environment>[-\w]+)/browser/"
        r"(?P<action>origins|rotate|off)/$",
        views.environment_browser,
        name="environment-browser",
    ),
    path(f"{P}/segments/", views.segment_list, name="segment-list"),
    path(f"{P}/segments/new/", views.segment_new, name="segment-new"),
    path(f"{P}/segments/<slug:segment>/", views.segment_edit, name="segment-edit"),
    path(f"{P}/segments/<slug:segment>/delete/", views.segment_delete, name="segment-delete"),
    path(f"{P}/change-requests/", views.change_request_list, name="change-request-list"),
    re_path(
        r"^p/(?P<project>[-\w]+)/change-requests/(?P<request_id>\d+)/"
        r"(?P<action>approve|reject|cancel)/$",
        views.change_request_action,
        name="change-request-action",
    ),
]
