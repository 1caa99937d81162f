"""Django admin for flags and their schedules; definitions are edited in the app (the
services validate and audit them), so these views are for looking and for emergencies."""

from django.contrib import admin

from flags import models


class FlagEnvironmentInline(admin.TabularInline):
    model = models.FlagEnvironment
    extra = 0


@admin.register(models.Flag)
class FlagAdmin(admin.ModelAdmin):
    list_display = ("key", "project", "type", "temporary", "archived", "updated_at")
    list_filter = ("project", "type", "archived")
    search_fields = ("key", "name")
    readonly_fields = ("seed", "created_at", "updated_at")
    inlines = [FlagEnvironmentInline]


@admin.register(models.FlagEnvironment)
class FlagEnvironmentAdmin(admin.ModelAdmin):
    list_display = ("flag", "environment", "enabled", "default_variation", "updated_at")
    list_filter = ("enabled",)
    raw_id_fields = ("flag", "environment")


@admin.register(models.ScheduledChange)
class ScheduledChangeAdmin(admin.ModelAdmin):
    list_display = ("flag", "environment", "at", "status", "applied_at")
    list_filter = ("status",)
    raw_id_fields = ("flag", "environment", "created_by")


@admin.register(models.ChangeRequest)
class ChangeRequestAdmin(admin.ModelAdmin):
    list_display = ("flag", "environment", "status", "requested_by", "reviewed_by", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("flag", "environment", "requested_by", "reviewed_by")


@admin.register(models.FlagUsage)
class FlagUsageAdmin(admin.ModelAdmin):
    list_display = ("flag", "environment", "variation", "day", "count", "last_at")
    raw_id_fields = ("flag", "environment")
