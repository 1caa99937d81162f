"""User API routes for definitions and lifecycle, under /api/v1/."""

from django.urls import path, re_path

from experiments import apis

P = "projects/<slug:project>"
E = f"{P}/experiments/<slug:key>"

urlpatterns = [
    path("power", apis.PowerApi.as_view(), name="api-power"),
    path("projects/", apis.ProjectListApi.as_view(), name="projects"),
    path(f"{P}/settings/", apis.ProjectSettingsApi.as_view(), name="project-settings-api"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/webhook-secret/(?P<action>reveal|rotate)/?$",
        apis.WebhookSecretApi.as_view(),
        name="webhook-secret-api",
    ),
    path(f"{P}/members/", apis.MemberListApi.as_view(), name="members"),
    path(f"{P}/members/<str:username>/", apis.MemberDetailApi.as_view(), name="member"),
    path(f"{P}/api-keys/", apis.ApiKeyListApi.as_view(), name="api-keys"),
    path(f"{P}/api-keys/<int:key_id>/", apis.ApiKeyDetailApi.as_view(), name="api-key"),
    path(f"{P}/metrics/", apis.MetricListApi.as_view(), name="metrics"),
    path(f"{P}/metrics/<slug:key>/", apis.MetricDetailApi.as_view(), name="metric"),
    path(f"{P}/layers/", apis.LayerListApi.as_view(), name="layers"),
    path(f"{P}/holdouts/", apis.HoldoutListApi.as_view(), name="holdouts"),
    path(f"{P}/holdouts/<int:holdout_id>/", apis.HoldoutDetailApi.as_view(), name="holdout-api"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/holdouts/(?P<holdout_id>[0-9]+)/(?P<action>start|end)/?$",
        apis.HoldoutActionApi.as_view(),
        name="holdout-action-api",
    ),
    path(f"{P}/experiments/", apis.ExperimentListApi.as_view(), name="experiments"),
    path(f"{E}/", apis.ExperimentDetailApi.as_view(), name="experiment"),
    path(f"{E}/audit-log/", apis.ExperimentAuditApi.as_view(), name="experiment-audit-log"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/experiments/(?P<key>[-\w]+)/"
        r"(?P<action>start|pause|resume|ramp|conclude|rollback)/?$",
        apis.ExperimentActionApi.as_view(),
        name="experiment-action",
    ),
]
