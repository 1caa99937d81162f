"""Analysis results: runs, snapshots and their per-(metric, variant) rows; webhook deliveries."""

from django.db import models

from experiments.models import Experiment, Metric, Project


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (another run held the experiment)"


class AnalysisRun(models.Model):
    """One attempt to compute a snapshot; failures stay visible with their error."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=32, default="schedule")
    task_id = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # The data cut-off, fixed at the first attempt so that a retried run computes the same snapshot.
    data_through = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Why a run stored no snapshot (between two looks, or after the final analysis).
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["experiment", "-created_at"], name="run_exp_created")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.experiment_id}: {self.status}"


class Recommendation(models.TextChoices):
    KEEP = "keep", "Keep"
    EXTEND = "extend", "Extend"
    ROLLBACK = "rollback", "Roll back"


class LookKind(models.TextChoices):
    COLLECTING = "collecting", "Collecting data (no decision yet)"
    LOOK = "look", "A counted look"
    FINAL = "final", "The final analysis at the planned sample"


class ResultSnapshot(models.Model):
    """The analysis of an experiment at one data cut-off; snapshots form the time series."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="snapshots")
    run = models.OneToOneField(
        AnalysisRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshot"
    )
    computed_at = models.DateTimeField()
    data_through = models.DateTimeField()
    phase = models.PositiveIntegerField(default=0)
    method = models.CharField(max_length=32)
    # Only looks decide and act (docs/statistics.md "Decision policy").
    look_kind = models.CharField(max_length=16, choices=LookKind.choices, default=LookKind.LOOK)
    total_units = models.PositiveIntegerField(default=0)
    health = models.JSONField(default=dict)
    recommendation = models.CharField(max_length=16, choices=Recommendation.choices)
    # Why (analysis.recommendations.Decision.cause): what pages, webhooks and exports read.
    cause = models.CharField(max_length=16, blank=True, default="")
    reasons = models.JSONField(default=list)
    arms = models.JSONField(default=list)
    # keep: the arm to ship; extend: the estimated extra units (all arms) and days to go.
    ship_variant = models.CharField(max_length=100, blank=True, default="")
    extra_units = models.BigIntegerField(null=True, blank=True)
    extra_days = models.FloatField(null=True, blank=True)
    # Group-sequential looks counted so far, per treatment arm: {"treatment": [0.1, 0.25]}.
    looks = models.JSONField(default=dict)
    # What the automation did on this snapshot: [{"action": "rollback", "at": ..., "reason": ...}].
    actions = models.JSONField(default=list)

    class Meta:
        ordering = ["-computed_at", "-id"]
        get_latest_by = "computed_at"
        constraints = [
            # One snapshot per cut-off: re-running a backfill or a retried run adds nothing.
            models.UniqueConstraint(
                fields=["experiment", "phase", "data_through"], name="snapshot_unique_cutoff"
            ),
        ]
        indexes = [
            models.Index(fields=["experiment", "-computed_at"], name="snapshot_exp_computed"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} @ {self.computed_at:%Y-%m-%d %H:%M}"


class ResultRow(models.Model):
    """One (metric, variant) of a snapshot: sufficient statistics and every reported number.

    Control rows carry only the sufficient statistics and mean; treatment rows carry the
    comparison against control.
    """

    snapshot = models.ForeignKey(ResultSnapshot, on_delete=models.CASCADE, related_name="rows")
    metric = models.ForeignKey(Metric, null=True, on_delete=models.SET_NULL, related_name="+")
    metric_key = models.CharField(max_length=100)
    metric_kind = models.CharField(max_length=16)
    role = models.CharField(max_length=16)
    variant = models.CharField(max_length=100)
    is_control = models.BooleanField(default=False)
    # Sufficient statistics (docs/statistics.md section 1), summed in SQL by aggregation.py.
    n = models.BigIntegerField(default=0)
    sum = models.FloatField(default=0)
    sum_sq = models.FloatField(default=0)
    den_sum = models.FloatField(default=0)
    den_sum_sq = models.FloatField(default=0)
    sum_prod = models.FloatField(default=0)
    cov_sum = models.FloatField(default=0)
    cov_sum_sq = models.FloatField(default=0)
    cov_sum_prod = models.FloatField(default=0)
    mean = models.FloatField(null=True)
    # The comparison with control (treatment rows only).
    lift_abs = models.FloatField(null=True)
    lift_rel = models.FloatField(null=True)
    ci_low = models.FloatField(null=True)
    ci_high = models.FloatField(null=True)
    p_value = models.FloatField(null=True)
    fixed_p_value = models.FloatField(null=True)
    # Secondary metrics: Benjamini-Hochberg adjusted p_value over all secondary comparisons.
    adjusted_p_value = models.FloatField(null=True)
    alpha = models.FloatField(null=True)  # the level this row was tested at (after Bonferroni)
    information_fraction = models.FloatField(null=True)  # group-sequential: n / planned n
    method = models.CharField(max_length=32, blank=True, default="")
    significant = models.BooleanField(default=False)
    status = models.CharField(max_length=16, blank=True, default="")
    # Everything else the stats engine reported (fixed and Bayesian views, CUPED reduction...).
    details = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["snapshot", "metric_key"], name="row_snapshot_metric")]

    def __str__(self) -> str:
        return f"{self.metric_key}/{self.variant}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (retries exhausted)"


class WebhookDelivery(models.Model):
    """One webhook message (e.g. an automated rollback) and its delivery attempts.

    ``body`` is stored so every retry sends the same bytes under the same signature.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks"
    )
    snapshot = models.ForeignKey(
        ResultSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event = models.CharField(max_length=64)
    url = models.URLField(max_length=500)
    body = models.TextField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["experiment", "-created_at"], name="webhook_exp_created")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url}: {self.status}"


class HoldoutSnapshot(models.Model):
    """The long-term comparison of a holdout at one data cut-off: units per arm, the sample
    ratio check and one row per project metric (analysis/holdouts.py). Snapshots form the
    holdout's time series."""

    holdout = models.ForeignKey(
        "experiments.Holdout", on_delete=models.CASCADE, related_name="snapshots"
    )
    computed_at = models.DateTimeField()
    data_through = models.DateTimeField()
    method = models.CharField(max_length=32, default="sequential")
    units = models.JSONField(default=dict)  # {"holdout": n, "general": n}
    srm_p_value = models.FloatField(null=True, blank=True)
    # [{"metric", "name", "kind", "direction", "holdout_n", "general_n", ... , "status"}]
    metrics = models.JSONField(default=list)
    warnings = models.JSONField(default=list)

    class Meta:
        ordering = ["-data_through", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["holdout", "data_through"], name="holdoutsnapshot_cutoff"
            ),
        ]

    def __str__(self) -> str:
        return f"holdout {self.holdout_id} through {self.data_through:%Y-%m-%d %H:%M}"


class TimeView(models.Model):
    """The daily lift and novelty views of an experiment (analysis/time_views.py): recomputed by
    the analysis run from the events (at most every ABACUS_TIME_VIEWS_INTERVAL seconds), one
    row per experiment, describing the snapshot it was computed with."""

    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="time_view"
    )
    snapshot = models.ForeignKey(
        ResultSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    phase = models.PositiveIntegerField(default=0)
    data_through = models.DateTimeField()
    computed_at = models.DateTimeField()
    seconds = models.FloatField(default=0)  # how long the statements took
    first_day = models.DateField()  # calendar day 0 (UTC)
    alpha = models.FloatField()
    # One row per (metric, treatment arm, day) of each view, and per (metric, arm) the trend:
    # the shapes of the results/daily and results/novelty endpoints (docs/analysts.md).
    daily = models.JSONField(default=list)
    novelty = models.JSONField(default=list)
    trends = models.JSONField(default=list)
    # Per metric and view, the per-day sufficient statistics of every variant they came from.
    sufficient = models.JSONField(default=dict)
    errors = models.JSONField(default=dict)  # metric key -> why it has no time views

    def __str__(self) -> str:
        return f"time views of {self.experiment_id} through {self.data_through:%Y-%m-%d %H:%M}"


from analysis.unit_aggregates import (  # noqa: E402, F401
    AggregateState,
    UnitAggregate,
    UnitAggregateMark,
    UnitAggregateProgress,
    UnitAggregateTop,
)
