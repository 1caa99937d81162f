from django.contrib import admin

from analysis import models


@admin.register(models.AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin):
    list_display = ("experiment", "status", "trigger", "created_at", "finished_at")
    list_filter = ("status",)


class ResultRowInline(admin.TabularInline):
    model = models.ResultRow
    extra = 0


@admin.register(models.ResultSnapshot)
class ResultSnapshotAdmin(admin.ModelAdmin):
    list_display = ("experiment", "computed_at", "recommendation", "total_units")
    inlines = [ResultRowInline]
