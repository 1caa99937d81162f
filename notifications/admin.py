from django.contrib import admin

from notifications import models


@admin.register(models.NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ("project", "name", "kind", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("project__slug", "name")


@admin.register(models.NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "email", "updated_at")
    list_filter = ("email",)
    search_fields = ("user__username", "project__slug")


@admin.register(models.NotificationDelivery)
class NotificationDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "project", "kind", "target", "status", "attempts", "created_at")
    list_filter = ("status", "kind", "event")
    search_fields = ("project__slug", "target", "title")
    readonly_fields = ("payload", "last_error")
