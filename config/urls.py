"""Routes: web UI, the REST API under /api/v1/, the SDK features endpoint, health checks.

Each app owns its routes: `<app>/api_urls.py` (under /api/v1/) and `<app>/urls.py` (pages).
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from assignments import apis as assignment_apis
from assignments import streaming
from config import health

api_v1 = [
    path("", include("assignments.api_urls")),
    path("", include("experiments.api_urls")),
    path("", include("flags.api_urls")),
    path("", include("analysis.api_urls")),
    path("", include("notifications.api_urls")),
    path("", include("releases.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api_v1)),
    path("api/features/<str:client_key>", assignment_apis.features_view, name="features"),
    path("sub/<str:client_key>", streaming.subscribe_view, name="features-stream"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("experiments.urls")),
    path("", include("flags.urls")),
    path("", include("analysis.urls")),
    path("", include("notifications.urls")),
    path("", include("releases.urls")),
]
