from django.contrib import admin

from experiments import models


class VariantInline(admin.TabularInline):
    model = models.Variant
    extra = 0


class ExperimentMetricInline(admin.TabularInline):
    model = models.ExperimentMetric
    extra = 0


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "client_key", "created_at")
    search_fields = ("slug", "name")


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role")
    list_filter = ("role", "project")


@admin.register(models.ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "prefix", "scopes", "created_at", "revoked_at")
    readonly_fields = ("prefix", "hashed_secret")


@admin.register(models.Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ("key", "project", "kind", "event_name", "direction")
    list_filter = ("kind", "project")


@admin.register(models.Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("key", "project", "status", "coverage", "started_at")
    list_filter = ("status", "project")
    inlines = [VariantInline, ExperimentMetricInline]


@admin.register(models.AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("at", "project", "actor_label", "action", "target")
    list_filter = ("action", "project")
