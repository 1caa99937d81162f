"""Where a project's notifications go (channels), what each person receives by email
(preferences), and every message sent (deliveries, with their attempts)."""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from experiments.models import Project


class Event(models.TextChoices):
    """Every event abacus notifies about; channels and preferences choose among them."""

    RELEASE_STARTED = "release.started", "Release started"
    RELEASE_STEP_ADVANCED = "release.step_advanced", "Release advanced a step"
    RELEASE_HELD = "release.held", "Release held (waiting for data or health)"
    RELEASE_PAUSED = "release.paused", "Release paused"
    RELEASE_RESUMED = "release.resumed", "Release resumed"
    RELEASE_ROLLED_BACK = "release.rolled_back", "Release rolled back"
    RELEASE_COMPLETED = "release.completed", "Release completed"
    RELEASE_FAILED = "release.failed", "Release failed"
    EXPERIMENT_RECOMMENDATION_CHANGED = (
        "experiment.recommendation_changed",
        "Experiment's recommendation changed",
    )
    EXPERIMENT_SRM_DETECTED = "experiment.srm_detected", "Experiment's sample-ratio mismatch"
    EXPERIMENT_ROLLED_BACK = "experiment.rolled_back", "Experiment rolled back"
    EXPERIMENT_RAMPED = "experiment.ramped", "Experiment ramped to more traffic"


EVENTS: tuple[str, ...] = tuple(Event.values)


class ChannelKind(models.TextChoices):
    SLACK = "slack", "Slack (incoming webhook)"
    EMAIL = "email", "Email"


class NotificationChannel(models.Model):
    """A project-wide destination: a Slack-compatible incoming-webhook URL, or email addresses
    (comma-separated). ``events`` empty means every event."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="notification_channels"
    )
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    name = models.CharField(max_length=100)
    target = models.CharField(max_length=1000)
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=ChannelKind.values), name="notification_channel_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name} ({self.kind})"


class NotificationPreference(models.Model):
    """What one person receives by email about one project: the listed events (an empty list
    receives nothing), at the user's own address, while ``email`` is on and they are a member."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    events = models.JSONField(default=list, blank=True)
    email = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "project"], name="notification_preference_unique_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.project}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class NotificationDelivery(models.Model):
    """One message to one channel or person, and its attempts. Title, text and payload are
    stored so every retry sends the same message."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="notification_deliveries"
    )
    channel = models.ForeignKey(
        NotificationChannel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    event = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    target = models.CharField(max_length=1000)
    title = models.CharField(max_length=300)
    text = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="notification_project_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.kind}:{self.target} ({self.status})"
