"""Feature flags, per-environment rules, segments, scheduled changes, change requests and
evaluation counts (docs/flags.md).

A flag's definition (variations, prerequisites) is project-wide; whether it is on and which
rules serve which variation is per environment (`FlagEnvironment`). Rules are stored as JSON in
the API's shape, validated by `flags.services` and turned into pure specs by `flags.selectors`.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from experiments.models import Environment, Project


def new_flag_seed() -> str:
    return uuid.uuid4().hex[:12]


class FlagType(models.TextChoices):
    BOOLEAN = "boolean", "Boolean"
    STRING = "string", "String"
    NUMBER = "number", "Number"
    JSON = "json", "JSON"


class Flag(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="flags")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=16, choices=FlagType.choices, default=FlagType.BOOLEAN)
    # [{"key": "on", "value": true}, ...]: at least two, keys unique, values of the flag's type.
    variations = models.JSONField(default=list)
    off_variation = models.CharField(max_length=100)
    tags = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_flags",
    )
    temporary = models.BooleanField(default=True)
    archived = models.BooleanField(default=False)
    # [{"flag": "<key>", "variations": ["<variation key>", ...]}]: served only when each
    # prerequisite flag serves one of the listed variations; otherwise the off variation.
    prerequisites = models.JSONField(default=list, blank=True)
    # The rollouts' hash seed: fixed for the flag's life, so a unit in a rollout stays in it.
    seed = models.CharField(max_length=64, default=new_flag_seed)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="flag_unique_key"),
            models.CheckConstraint(condition=Q(type__in=FlagType.values), name="flag_type_valid"),
        ]

    def __str__(self) -> str:
        return self.key


class FlagEnvironment(models.Model):
    """A flag in one environment: on or off, its ordered rules and the default variation."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="configs")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="flag_configs"
    )
    enabled = models.BooleanField(default=False)
    default_variation = models.CharField(max_length=100)
    rules = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment__position", "environment_id"]
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_env_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.flag.key}@{self.environment.key}"


class ScheduledChangeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class ScheduledChange(models.Model):
    """A change applied by the beat at ``at``: ``{"enabled": bool}`` turns the flag on or off
    in the environment; ``{"rule": "<rule id>", "variation": "<key>", "percent": N}`` moves a
    rollout rule so that variation gets N% (the rest shared out as before)."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="scheduled_changes")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="scheduled_changes"
    )
    at = models.DateTimeField()
    change = models.JSONField()
    status = models.CharField(
        max_length=16, choices=ScheduledChangeStatus.choices, default=ScheduledChangeStatus.PENDING
    )
    note = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["status", "at"], name="scheduled_change_due")]

    def __str__(self) -> str:
        return f"{self.change} at {self.at:%Y-%m-%d %H:%M}"


class ChangeRequestStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPLIED = "applied", "Approved and applied"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Approved, but could not be applied"


class ChangeRequest(models.Model):
    """A proposed change to a flag in a production environment of a project that requires
    approval: another member with the admin role reviews it; approval applies it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="change_requests")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="change_requests")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="change_requests"
    )
    # {"enabled": bool} and/or {"default_variation": key} and/or {"rules": [...]}
    change = models.JSONField()
    comment = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=16, choices=ChangeRequestStatus.choices, default=ChangeRequestStatus.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    review_comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"change request {self.pk} ({self.status})"


class FlagUsage(models.Model):
    """Evaluation counts per flag, environment, variation and day (from /evaluate and from
    flag exposure events), and when it was last evaluated."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="usage")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    variation = models.CharField(max_length=100)
    day = models.DateField()
    count = models.BigIntegerField(default=0)
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment", "variation", "day"], name="flag_usage_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.variation} x{self.count} on {self.day}"
