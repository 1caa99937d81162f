from django.contrib import admin

from analysis import models


@admin.register(models.AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin):
    list_display = (
        "experiment",
        "status",
        "trigger",
        "data_through",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "trigger")
    search_fields = ("experiment__key", "error")


class ResultRowInline(admin.TabularInline):
    model = models.ResultRow
    extra = 0


@admin.register(models.ResultSnapshot)
class ResultSnapshotAdmin(admin.ModelAdmin):
    list_display = ("experiment", "data_through", "computed_at", "recommendation", "total_units")
    list_filter = ("recommendation",)
    search_fields = ("experiment__key",)
    inlines = [ResultRowInline]


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "experiment", "url", "status", "attempts", "last_status_code")
    list_filter = ("status", "event")
    readonly_fields = ("body", "last_error")


@admin.register(models.HoldoutSnapshot)
class HoldoutSnapshotAdmin(admin.ModelAdmin):
    list_display = ("holdout", "data_through", "computed_at", "srm_p_value")
    search_fields = ("holdout__name",)
    readonly_fields = ("units", "metrics", "warnings")
