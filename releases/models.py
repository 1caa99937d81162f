"""Guarded releases: a flag's change in one environment from a baseline variation to a new one,
in steps, watched by sequential harm tests and rolled back on harm (docs/releases.md).

A release owns one rollout rule of its flag's environment (``rule_id``, appended after the
environment's own rules, so forced units and earlier rules are untouched): baseline and new
variation in cumulative slices, so a unit served the new variation keeps it as the share grows.
Each analysis is a ``ReleaseCheck``; each state change a ``ReleaseTransition`` (who or what
moved it, and why), also written to the project's audit log.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from experiments.models import Environment, Metric, Project
from flags.models import Flag


class ReleaseStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    ROLLED_BACK = "rolled_back", "Rolled back"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


LIVE_STATUSES = (ReleaseStatus.SCHEDULED, ReleaseStatus.RUNNING, ReleaseStatus.PAUSED)
FINAL_STATUSES = (ReleaseStatus.ROLLED_BACK, ReleaseStatus.COMPLETED, ReleaseStatus.FAILED)


class ReleaseKind(models.TextChoices):
    CANARY = "canary", "Canary (steps)"
    BLUE_GREEN = "blue_green", "Blue-green (switch, verify, switch back on harm)"


class Release(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="releases")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="releases")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="releases")
    kind = models.CharField(max_length=16, choices=ReleaseKind.choices, default=ReleaseKind.CANARY)
    variation = models.CharField(max_length=100)  # the new variation
    baseline_variation = models.CharField(max_length=100)
    # [{"percent": 1, "min_minutes": 10, "min_units": 100}, ...]: percents increase.
    steps = models.JSONField(default=list)
    alpha = models.FloatField(default=0.05)  # P(false rollback of a harmless release) at most
    auto_rollback = models.BooleanField(default=True)
    analysis_interval_seconds = models.PositiveIntegerField(default=60)
    status = models.CharField(
        max_length=16, choices=ReleaseStatus.choices, default=ReleaseStatus.SCHEDULED
    )
    step = models.PositiveIntegerField(default=0)  # index into steps
    step_started_at = models.DateTimeField(null=True, blank=True)
    start_at = models.DateTimeField(null=True, blank=True)  # scheduled start
    next_analysis_at = models.DateTimeField(null=True, blank=True)
    rule_id = models.CharField(max_length=32, blank=True, default="")
    # The latest decision: {"action", "reasons", "waits_for", "at", "check"}.
    decision = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment"],
                condition=Q(status__in=["scheduled", "running", "paused"]),
                name="release_one_live_per_flag_environment",
            ),
            models.CheckConstraint(
                condition=Q(status__in=ReleaseStatus.values), name="release_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0) & Q(alpha__lt=0.5), name="release_alpha_range"
            ),
        ]
        indexes = [models.Index(fields=["status", "next_analysis_at"], name="release_due")]

    def __str__(self) -> str:
        return f"release {self.pk} of {self.flag_id} ({self.status})"


class ReleaseMetricRole(models.TextChoices):
    GUARDRAIL = "guardrail", "Guardrail"
    PRIMARY = "primary", "Primary"


class ReleaseMetric(models.Model):
    """A metric the release watches. Every role is tested for harm (one-sided); a primary is
    also shown with its improvement interval (it does not gate the steps)."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="metrics")
    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(
        max_length=16, choices=ReleaseMetricRole.choices, default=ReleaseMetricRole.GUARDRAIL
    )
    # Tolerated harm, relative to the baseline (0.02: up to 2% worse is not a rollback).
    non_inferiority_margin = models.FloatField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["release", "metric"], name="release_metric_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.metric_id} ({self.role})"


class ReleaseCheck(models.Model):
    """One analysis of the current step: per-arm units, per-metric comparison and the
    decision. The monitoring page draws these over time."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="checks")
    step = models.PositiveIntegerField()
    percent = models.FloatField()
    at = models.DateTimeField()  # data through
    units = models.JSONField(default=dict)  # {"baseline": n, "new": n, "excluded": n}
    # [{"metric", "kind", "role", "direction", "baseline", "new", "difference", "lower",
    #   "upper", "bound", "level", "harmed", "status", "error"}]
    metrics = models.JSONField(default=list)
    action = models.CharField(max_length=16)  # advance | hold | rollback | complete
    reasons = models.JSONField(default=list)
    waits_for = models.JSONField(default=list)
    elapsed_ms = models.FloatField(default=0.0)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["release", "at"], name="release_check_at")]

    def __str__(self) -> str:
        return f"check of release {self.release_id} at {self.at:%H:%M:%S}: {self.action}"


class ReleaseTransition(models.Model):
    """A state or step change and who (a person) or what (the monitor) made it, and why."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    from_step = models.IntegerField(null=True, blank=True)
    to_step = models.IntegerField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, default="monitor")
    reason = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status} by {self.actor_label}"
