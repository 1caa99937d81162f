"""Routes: web UI, the REST API under /api/v1/, the SDK features endpoint, health checks."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from analysis import apis as analysis_apis
from assignments import apis as assignment_apis
from config import health
from experiments import apis as experiment_apis

P = "projects/<slug:project>"
E = f"{P}/experiments/<slug:key>"

api_v1 = [
    re_path(r"^assign/?$", assignment_apis.AssignApi.as_view(), name="assign"),
    re_path(r"^assign/bulk/?$", assignment_apis.AssignBulkApi.as_view(), name="assign-bulk"),
    re_path(r"^events/?$", assignment_apis.EventsApi.as_view(), name="events"),
    path("projects/", experiment_apis.ProjectListApi.as_view(), name="projects"),
    path(f"{P}/members/", experiment_apis.MemberListApi.as_view(), name="members"),
    path(f"{P}/api-keys/", experiment_apis.ApiKeyListApi.as_view(), name="api-keys"),
    path(f"{P}/api-keys/<int:key_id>/", experiment_apis.ApiKeyDetailApi.as_view(), name="api-key"),
    path(f"{P}/metrics/", experiment_apis.MetricListApi.as_view(), name="metrics"),
    path(f"{P}/metrics/<slug:key>/", experiment_apis.MetricDetailApi.as_view(), name="metric"),
    path(f"{P}/experiments/", experiment_apis.ExperimentListApi.as_view(), name="experiments"),
    path(f"{E}/", experiment_apis.ExperimentDetailApi.as_view(), name="experiment"),
    re_path(
        r"^projects/(?P<project>[-\w]+)/experiments/(?P<key>[-\w]+)/"
        r"(?P<action>start|pause|resume|ramp|conclude|rollback)/?$",
        experiment_apis.ExperimentActionApi.as_view(),
        name="experiment-action",
    ),
    path(f"{E}/results", analysis_apis.ResultsApi.as_view(), name="results"),
    path(f"{E}/results/history", analysis_apis.ResultsHistoryApi.as_view(), name="results-history"),
    path(f"{E}/analyze", analysis_apis.AnalyzeApi.as_view(), name="analyze"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api_v1)),
    path("api/features/<str:client_key>", assignment_apis.features_view, name="features"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("experiments.urls")),
    path("", include("analysis.urls")),
]
