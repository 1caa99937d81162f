"""Web pages: a project's notifications, under /p/<project>/notifications/."""

from django.urls import path

from notifications import views

P = "p/<slug:project>/notifications"

urlpatterns = [
    path(f"{P}/", views.notifications_page, name="project-notifications"),
    path(f"{P}/channels/", views.channel_create, name="notification-channel-create"),
    path(
        f"{P}/channels/<int:channel_id>/remove/",
        views.channel_remove,
        name="notification-channel-remove",
    ),
    path(
        f"{P}/channels/<int:channel_id>/toggle/",
        views.channel_toggle,
        name="notification-channel-toggle",
    ),
    path(f"{P}/me/", views.preference_update, name="notification-preference-update"),
]
