from django.contrib import admin

from assignments import models


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("experiment", "unit_id", "variant", "assigned_at")
    raw_id_fields = ("experiment", "variant")


@admin.register(models.Exposure)
class ExposureAdmin(admin.ModelAdmin):
    list_display = ("event_id", "experiment", "variant", "unit_id", "ts")
    raw_id_fields = ("experiment", "variant", "project")


@admin.register(models.MetricEvent)
class MetricEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "name", "unit_id", "value", "ts")
    raw_id_fields = ("project",)
