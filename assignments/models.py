"""Sticky assignments and the raw event tables (exposures, metric events)."""

from django.db import models

from experiments.models import Experiment, Project, Variant


class Assignment(models.Model):
    """The first variant a unit was given in an experiment; later calls return it.

    Written by ``/assign`` and also by the first exposure of a unit that an SDK bucketed locally,
    so the server keeps answering what the unit actually saw.
    """

    # No index of its own: the unique (experiment, unit_id) index leads with it. A separate one
    # costs every insert and, with stale statistics, lures the planner away from the unique one.
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
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
    """A unit saw a variant. (project, event_id) is the idempotency key.

    ``assignment_mismatch`` records that, when the exposure arrived, the unit's stored assignment
    named another variant: the unit has seen two variants (a multi-exposure) even if this is its
    only exposure row. ``attributes``: the unit's attributes sent with the exposure (optional).
    """

    # project and experiment lead the unique and the (experiment, unit_id, ts) indexes: no index
    # of their own (each index slows ingestion).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    event_id = models.CharField(max_length=200)
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="exposures", db_index=False
    )
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="exposures")
    unit_id = models.CharField(max_length=200)
    ts = models.DateTimeField()
    assignment_mismatch = models.BooleanField(default=False)
    # The unit's attributes when exposed (country, platform, ...), as the event sent them:
    # analyses break results down by them (docs/analysts.md, "Dimension breakdowns").
    attributes = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "event_id"], name="exposure_unique_event"),
        ]
        indexes = [
            # Covering (PostgreSQL INCLUDE): the aggregation reads exposures from the index alone.
            models.Index(
                fields=["experiment", "unit_id", "ts"],
                include=["variant", "assignment_mismatch"],
                name="exposure_exp_unit_ts",
            ),
        ]

    def __str__(self) -> str:
        return self.event_id


class FlagExposure(models.Model):
    """A unit was served a flag's variation in an environment (an SDK's feature-usage event,
    or ``POST /evaluate`` with ``"track": true``). (project, event_id) is the idempotency key,
    shared with exposures and metric events: one event id is one event across all types.
    Guarded releases analyse these with the metric events."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    event_id = models.CharField(max_length=200)
    environment = models.ForeignKey(
        "experiments.Environment", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    flag = models.ForeignKey("flags.Flag", on_delete=models.CASCADE, related_name="exposures")
    variation = models.CharField(max_length=100)
    unit_id = models.CharField(max_length=200)
    ts = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "event_id"], name="flag_exposure_unique_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["environment", "flag", "unit_id", "ts"],
                include=["variation"],
                name="flag_exposure_env_unit_ts",
            ),
            # A release's analysis reads one step's window: a range on ts, not all history.
            models.Index(
                fields=["environment", "flag", "ts"],
                include=["unit_id", "variation"],
                name="flag_exposure_env_flag_ts",
            ),
        ]

    def __str__(self) -> str:
        return self.event_id


class MetricEvent(models.Model):
    """Something a unit did, with a value. (project, event_id) is the idempotency key."""

    # project leads both composite indexes: no index of its own.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
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
            # The aggregation looks events up per unit and reads name and value from the index
            # (an index-only scan on PostgreSQL; SQLite ignores INCLUDE and uses the keys).
            models.Index(
                fields=["project", "unit_id", "ts"],
                include=["name", "value"],
                name="metricevent_unit_ts",
            ),
        ]

    def __str__(self) -> str:
        return self.event_id


class HoldoutArm(models.IntegerChoices):
    HOLDOUT = 0, "holdout"
    GENERAL = 1, "general"


class HoldoutExposure(models.Model):
    """A unit of the holdout, or of the equal-sized sample of everyone else ("general"), seen by
    a serving path while the holdout ran: one row per (holdout, unit), stamped with the first
    time it was seen. The denominators of the long-term comparison (docs/analysts.md
    "Holdouts" says which paths record them)."""

    holdout = models.ForeignKey(
        "experiments.Holdout", on_delete=models.CASCADE, related_name="exposures"
    )
    unit_id = models.CharField(max_length=200)
    arm = models.PositiveSmallIntegerField(choices=HoldoutArm.choices)
    ts = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["holdout", "unit_id"], name="holdoutexposure_unit"),
        ]

    def __str__(self) -> str:
        return f"{self.unit_id} ({self.get_arm_display()})"
