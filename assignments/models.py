"""Sticky assignments and the raw event tables (exposures, metric events)."""

from django.db import models

from experiments.models import Experiment, Project, Variant


class Assignment(models.Model):
    """The first variant a unit was given in an experiment; later calls return it."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    unit_id = models.CharField(max_length=200)
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="assignments")
    phase = models.PositiveIntegerField(default=0)
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "unit_id"], name="assignment_unique_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.unit_id} -> {self.variant_id}"


class Exposure(models.Model):
    """A unit saw a variant. (project, event_id) is the idempotency key."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=200)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="exposures")
    unit_id = models.CharField(max_length=200)
    ts = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "event_id"], name="exposure_unique_event"),
        ]
        indexes = [
            models.Index(fields=["experiment", "unit_id", "ts"], name="exposure_exp_unit_ts"),
        ]

    def __str__(self) -> str:
        return self.event_id


class MetricEvent(models.Model):
    """Something a unit did, with a value. (project, event_id) is the idempotency key."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    unit_id = models.CharField(max_length=200)
    value = models.FloatField(default=1.0)
    ts = models.DateTimeField()
    properties = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "event_id"], name="metricevent_unique_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "name", "unit_id", "ts"], name="metricevent_name_unit_ts"
            ),
        ]

    def __str__(self) -> str:
        return self.event_id
