"""Django admin for the definitions. The audit log is read-only: history is never edited."""

from django.contrib import admin
from django.http import HttpRequest
from knox.models import AuthToken

from experiments import models


class VariantInline(admin.TabularInline):
    model = models.Variant
    extra = 0


class ExperimentMetricInline(admin.TabularInline):
    model = models.ExperimentMetric
    extra = 0
    autocomplete_fields = ("metric",)


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "client_key", "created_at")
    search_fields = ("slug", "name")
    readonly_fields = ("client_key", "created_at")
    inlines = [MembershipInline]


@admin.register(models.Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ("key", "project", "name", "client_key", "production")
    list_filter = ("project",)
    search_fields = ("key", "name", "project__slug")
    readonly_fields = ("client_key", "created_at")


@admin.register(models.Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("key", "project", "name", "updated_at")
    list_filter = ("project",)
    search_fields = ("key", "name")


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role")
    list_filter = ("role", "project")
    search_fields = ("user__username", "project__slug")
    autocomplete_fields = ("user", "project")


@admin.register(models.ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "project",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("project",)
    search_fields = ("name", "prefix")
    # Keys are created in the project settings page (the secret is shown once there).
    readonly_fields = ("prefix", "hashed_secret", "created_at", "created_by", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(models.Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "project", "kind", "event_name", "direction")
    list_filter = ("kind", "direction", "project")
    search_fields = ("key", "name", "event_name")


@admin.register(models.Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "project", "status", "coverage", "owner", "started_at")
    list_filter = ("status", "project", "decision_policy", "auto_rollback")
    search_fields = ("key", "name", "hypothesis")
    readonly_fields = ("created_at", "updated_at", "started_at", "ended_at", "phase_started_at")
    inlines = [VariantInline, ExperimentMetricInline]


@admin.register(models.Variant)
class VariantAdmin(admin.ModelAdmin):
    list_display = ("experiment", "key", "name", "weight", "is_control")
    search_fields = ("experiment__key", "key")


@admin.register(models.ExperimentMetric)
class ExperimentMetricAdmin(admin.ModelAdmin):
    list_display = ("experiment", "metric", "role", "non_inferiority_margin")
    list_filter = ("role",)
    search_fields = ("experiment__key", "metric__key")


@admin.register(models.AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("at", "project", "actor_label", "action", "target")
    list_filter = ("action", "project")
    search_fields = ("target", "actor_label")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# People's API tokens: stored as digests; the admin lists who has one and until when, and
# deleting a row revokes it. It never shows a token (nor its digest) and cannot make one: a
# token is made by `manage.py drf_create_token <user>`, which prints it once.
admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class UserTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "created", "expiry")
    search_fields = ("user__username",)
    fields = ("user", "created", "expiry")
    readonly_fields = ("user", "created")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(models.Holdout)
class HoldoutAdmin(admin.ModelAdmin):
    """Name and description only: share, seed and state move through the services (the
    holdout page or API), which keep one running, freeze what must stay and audit it."""

    list_display = ("name", "project", "share", "status", "started_at", "ended_at")
    list_filter = ("project", "enabled")
    search_fields = ("name", "project__slug")
    readonly_fields = ("share", "seed", "enabled", "started_at", "ended_at", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
