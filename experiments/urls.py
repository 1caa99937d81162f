"""Web pages: experiments, the metric catalog, the holdout's form and actions, and project
settings, under /p/<project>/.

The results pages under .../experiments/<key>/results/ and the holdout page live in
analysis/urls.py.
"""

from django.urls import path, re_path

from experiments import views

P = "p/<slug:project>"
E = f"{P}/experiments/<slug:key>"

urlpatterns = [
    path("", views.home, name="home"),
    path(f"{P}/", views.experiment_list, name="experiment-list"),
    path(f"{P}/experiments/new/", views.experiment_new, name="experiment-new"),
    path(f"{E}/", views.experiment_detail, name="experiment-detail"),
    path(f"{E}/edit/", views.experiment_edit, name="experiment-edit"),
    re_path(
        r"^p/(?P<project>[-\w]+)/experiments/(?P<key>[-\w]+)/"
        r"(?P<action>start|pause|resume|ramp|conclude|rollback|delete)/$",
        views.experiment_action,
        name="experiment-action",
    ),
    path(f"{P}/holdout/new/", views.holdout_new, name="holdout-new"),
    path(f"{P}/holdout/<int:holdout_id>/edit/", views.holdout_edit, name="holdout-edit"),
    path(f"{P}/holdout/<int:holdout_id>/delete/", views.holdout_remove, name="holdout-delete"),
    re_path(
        r"^p/(?P<project>[-\w]+)/holdout/(?P<holdout_id>[0-9]+)/(?P<action>start|end)/$",
        views.holdout_action,
        name="holdout-action",
    ),
    path(f"{P}/layers/", views.layer_list, name="layer-list"),
    path(f"{P}/layers/<path:layer>/", views.layer_list, name="layer-detail"),
    path(f"{P}/metrics/", views.metric_list, name="metric-list"),
    path(f"{P}/metrics/new/", views.metric_new, name="metric-new"),
    path(f"{P}/metrics/<slug:key>/edit/", views.metric_edit, name="metric-edit"),
    path(f"{P}/metrics/<slug:key>/delete/", views.metric_delete, name="metric-delete"),
    path(f"{P}/settings/", views.project_settings, name="project-settings"),
    path(f"{P}/settings/project/", views.project_settings_update, name="project-settings-update"),
    re_path(
        r"^p/(?P<project>[-\w]+)/settings/webhook-secret/(?P<action>reveal|rotate)/$",
        views.webhook_secret_action,
        name="webhook-secret",
    ),
    path(f"{P}/settings/members/", views.member_add, name="member-add"),
    path(f"{P}/settings/members/<str:username>/role/", views.member_role, name="member-role"),
    path(f"{P}/settings/members/<str:username>/remove/", views.member_remove, name="member-remove"),
    path(f"{P}/settings/api-keys/", views.api_key_create, name="api-key-create"),
    path(
        f"{P}/settings/api-keys/<int:key_id>/revoke/",
        views.api_key_revoke,
        name="api-key-revoke",
    ),
]
