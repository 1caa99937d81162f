"""User API routes for notification channels and preferences, under /api/v1/."""

from django.urls import path, re_path

from notifications import apis

P = "projects/<slug:project>"

urlpatterns = [
    path(
        f"{P}/notification-channels/",
        apis.ChannelListApi.as_view(),
        name="notification-channels",
    ),
    path(
        f"{P}/notification-channels/<int:channel_id>/",
        apis.ChannelDetailApi.as_view(),
        name="notification-channel",
    ),
    re_path(
        r"^projects/(?P<project>[-\w]+)/notification-preferences/me/?$",
        apis.MyPreferenceApi.as_view(),
        name="notification-preferences-me",
    ),
]
