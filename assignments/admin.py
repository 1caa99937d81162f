"""Admin views of the hot-path tables: read-only, and cheap on tables with millions of rows.

Assignments and events are evidence the analysis is computed from: editing one in the admin
would silently change results, so these views only look (deleting stays possible, e.g. to
erase a unit's data on request). Counting a huge table for the paginator is skipped.
"""

from django.contrib import admin
from django.http import HttpRequest

from assignments import models


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(models.Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ("unit_id", "experiment", "variant", "phase", "assigned_at")
    list_select_related = ("experiment", "variant")
    search_fields = ("=unit_id",)
    raw_id_fields = ("experiment", "variant")


@admin.register(models.Exposure)
class ExposureAdmin(ReadOnlyAdmin):
    list_display = (
        "event_id",
        "experiment",
        "variant",
        "unit_id",
        "ts",
        "assignment_mismatch",
        "received_at",
    )
    list_select_related = ("experiment", "variant")
    search_fields = ("=unit_id", "=event_id")
    raw_id_fields = ("experiment", "variant", "project")


@admin.register(models.MetricEvent)
class MetricEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "name", "unit_id", "value", "ts", "received_at")
    search_fields = ("=unit_id", "=event_id", "=name")
    raw_id_fields = ("project",)


@admin.register(models.FlagExposure)
class FlagExposureAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "flag", "environment", "variation", "unit_id", "ts")
    list_select_related = ("flag", "environment")
    search_fields = ("=unit_id", "=event_id")
    raw_id_fields = ("flag", "environment")


@admin.register(models.HoldoutExposure)
class HoldoutExposureAdmin(ReadOnlyAdmin):
    list_display = ("unit_id", "holdout", "arm", "ts")
    list_select_related = ("holdout",)
    search_fields = ("=unit_id",)
    raw_id_fields = ("holdout",)
