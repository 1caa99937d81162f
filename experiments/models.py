"""Experiment definitions: projects (tenants), people, API keys, metrics, experiments."""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from experiments.filters import describe_filters


def new_client_key() -> str:
    return "sdk-" + secrets.token_urlsafe(12)


def new_webhook_secret() -> str:
    return secrets.token_hex(24)


def new_browser_key() -> str:
    return "web-" + secrets.token_urlsafe(18)


class Project(models.Model):
    """A tenant: everything else belongs to exactly one project."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    client_key = models.CharField(max_length=64, unique=True, default=new_client_key)
    webhook_url = models.URLField(blank=True, default="")
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret)
    # Changes to production flags go through a change request a second member approves.
    require_approval = models.BooleanField(default=False)
    # Events (exposures, flag exposures, metric events) older than this many days are dropped by
    # the hourly maintenance and refused at ingestion; null keeps them forever
    # (docs/operations.md "Event retention"; the rule: experiments.services.projects).
    event_retention_days = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


# Every project has these, created with it (and by migration for older projects); more may be
# added. Production keeps the project's own client key.
DEFAULT_ENVIRONMENTS = (
    ("production", "Production"),
    ("staging", "Staging"),
    ("development", "Development"),
)
PRODUCTION = "production"


class Environment(models.Model):
    """Where a project's flags are served: its own client key (SDKs), service API keys and
    per-flag rules. Changes to a ``production`` environment need an admin, or an approved
    change request when the project requires approval."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    client_key = models.CharField(max_length=64, unique=True, default=new_client_key)
    production = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)
    # Events from browsers (docs/clients.md "Events from browsers"): a public key that may only
    # post events to /api/v1/events/beacon, from pages of the listed origins. Null: turned off.
    browser_key = models.CharField(max_length=64, unique=True, null=True, blank=True)
    browser_origins = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="environment_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.key}"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    EDITOR = "editor", "Editor (product manager)"
    ANALYST = "analyst", "Analyst"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class ApiKeyScope(models.TextChoices):
    ASSIGN = "assign", "Assign units to variants"
    INGEST = "ingest", "Post events"
    READ = "read", "Read results and exports"
    EVALUATE = "evaluate", "Evaluate flags (POST /evaluate)"
    RELEASE = "release", "Run releases of its environment (the CI/CD gate)"


class ApiKey(models.Model):
    """A service credential. The secret is shown once; only its SHA-256 is stored."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    # The environment whose flags /evaluate serves and whose flag exposures /events records;
    # null only for keys made before environments existed (migrated to production).
    environment = models.ForeignKey(
        "Environment", null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_secret = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class MetricKind(models.TextChoices):
    BINOMIAL = "binomial", "Conversion (binomial)"
    MEAN = "mean", "Mean of a value per unit"
    COUNT = "count", "Count per unit"
    RATIO = "ratio", "Ratio of two per-unit sums"
    # Guarded releases' health metrics (p50/p95/p99 of an event's value, e.g. latency_ms);
    # experiments' analysis takes the other kinds.
    QUANTILE = "quantile", "Quantile of an event's values (releases)"


class Direction(models.TextChoices):
    INCREASE = "increase", "Higher is better"
    DECREASE = "decrease", "Lower is better"


class Metric(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="metrics")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=MetricKind.choices, default=MetricKind.BINOMIAL)
    event_name = models.CharField(max_length=200)
    denominator_event = models.CharField(max_length=200, blank=True, default="")
    direction = models.CharField(
        max_length=16, choices=Direction.choices, default=Direction.INCREASE
    )
    winsorize_quantile = models.FloatField(null=True, blank=True)
    # Quantile metrics only: which quantile of the event values (0.95 = p95).
    quantile = models.FloatField(null=True, blank=True)
    conversion_window_hours = models.PositiveIntegerField(default=72)
    cuped = models.BooleanField(default=True)
    # Metrics from event properties (experiments/filters.py): which of the event's occurrences
    # count ([{"property", "op", "value"}], all must match), and the property whose number is
    # the value instead of the event's value ("" for the value).
    filters = models.JSONField(default=list, blank=True)
    value_property = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="metric_unique_key"),
            models.CheckConstraint(
                condition=Q(winsorize_quantile__isnull=True)
                | (Q(winsorize_quantile__gt=0.5) & Q(winsorize_quantile__lte=1)),
                name="metric_winsorize_quantile_range",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=MetricKind.values), name="metric_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(quantile__isnull=True) | (Q(quantile__gt=0) & Q(quantile__lt=1)),
                name="metric_quantile_range",
            ),
            models.CheckConstraint(
                condition=Q(conversion_window_hours__gte=1), name="metric_window_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def filters_text(self) -> str:
        """The filters in words, e.g. ``plan in ["pro", "team"] and amount ≥ 2``."""
        return describe_filters(self.filters)


class Segment(models.Model):
    """A saved audience, reused by flag rules and experiments' targeting: units matching
    ``condition`` (a GrowthBook condition on attributes) or listed in ``include``, minus those
    in ``exclude`` (unit ids, matched on the ``id`` attribute)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segments")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    condition = models.JSONField(default=dict, blank=True)
    include = models.JSONField(default=list, blank=True)
    exclude = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="segment_unique_key"),
        ]

    def __str__(self) -> str:
        return self.key


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    CONCLUDED = "concluded", "Concluded"
    ROLLED_BACK = "rolled_back", "Rolled back"


class DecisionPolicy(models.TextChoices):
    SUPERIORITY = "superiority", "Ship on a significant primary improvement"
    DO_NO_HARM = "do_no_harm", "Ship when nothing is harmed (non-inferiority)"


def new_seed() -> str:
    return uuid.uuid4().hex[:12]


# A ramp stage's minimum duration when none is given: the one default every form, serializer,
# service and selector uses (docs/user-guide.md, "Ranges of the settings").
RAMP_STAGE_DEFAULT_HOURS = 24


class Experiment(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="experiments")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    hypothesis = models.TextField(blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_experiments",
    )
    status = models.CharField(
        max_length=16, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    seed = models.CharField(max_length=64, default=new_seed)
    hash_attribute = models.CharField(max_length=64, default="id")
    coverage = models.FloatField(default=1.0)
    targeting = models.JSONField(default=dict, blank=True)
    # A saved segment AND-ed with the targeting condition (docs/flags.md "Segments").
    segment = models.ForeignKey(
        "Segment", null=True, blank=True, on_delete=models.PROTECT, related_name="experiments"
    )
    layer = models.CharField(max_length=64, blank=True, default="")
    layer_start = models.FloatField(default=0.0)
    layer_end = models.FloatField(default=1.0)
    alpha = models.FloatField(default=0.05)
    planned_sample_size = models.PositiveIntegerField(null=True, blank=True)
    mde = models.FloatField(null=True, blank=True)
    decision_policy = models.CharField(
        max_length=16, choices=DecisionPolicy.choices, default=DecisionPolicy.SUPERIORITY
    )
    auto_rollback = models.BooleanField(default=False)
    ramp_stages = models.JSONField(default=list, blank=True)
    ramp_stage_index = models.PositiveIntegerField(default=0)
    ramp_stage_started_at = models.DateTimeField(null=True, blank=True)
    phase = models.PositiveIntegerField(default=0)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    decision_variant = models.CharField(max_length=100, blank=True, default="")
    # Why the decision was taken; required when it goes against the latest recommendation
    # (docs/user-guide.md "Decisions on record").
    rationale = models.TextField(blank=True, default="")
    # Short words for the library of concluded experiments (experiments.services.check_tags).
    tags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="experiment_unique_key"),
            models.CheckConstraint(
                condition=Q(coverage__gte=0) & Q(coverage__lte=1), name="experiment_coverage_0_1"
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0) & Q(alpha__lt=0.5), name="experiment_alpha_range"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ExperimentStatus.values), name="experiment_status_valid"
            ),
            # The layer (namespace) slice: 0 <= start < end <= 1, as the SDKs expect.
            models.CheckConstraint(
                condition=Q(layer_start__gte=0)
                & Q(layer_end__lte=1)
                & Q(layer_start__lt=F("layer_end")),
                name="experiment_layer_range",
            ),
        ]
        indexes = [models.Index(fields=["project", "status"], name="experiment_proj_status")]

    def __str__(self) -> str:
        return self.key


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200, blank=True, default="")
    weight = models.FloatField()
    is_control = models.BooleanField(default=False)
    value = models.JSONField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_unique_key"),
            models.CheckConstraint(
                condition=Q(weight__gte=0) & Q(weight__lte=1), name="variant_weight_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}:{self.key}"


class MetricRole(models.TextChoices):
    PRIMARY = "primary", "Primary"
    SECONDARY = "secondary", "Secondary"
    GUARDRAIL = "guardrail", "Guardrail"


class ExperimentMetric(models.Model):
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="experiment_metrics"
    )
    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="experiment_metrics")
    role = models.CharField(max_length=16, choices=MetricRole.choices, default=MetricRole.PRIMARY)
    non_inferiority_margin = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["id"]  # the order the person listed them in
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "metric"], name="experiment_metric_unique"
            ),
            models.CheckConstraint(
                condition=Q(non_inferiority_margin__isnull=True)
                | (Q(non_inferiority_margin__gte=0) & Q(non_inferiority_margin__lt=1)),
                name="experiment_metric_margin_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}:{self.metric.key} ({self.role})"


class AuditLog(models.Model):
    """Every change a person or the automation makes."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_logs")
    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_logs"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=150, default="system")
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["experiment", "-at"], name="audit_experiment_at"),
            models.Index(fields=["project", "-at"], name="audit_project_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target}"


def new_holdout_seed() -> str:
    return "holdout-" + uuid.uuid4().hex[:12]


class Holdout(models.Model):
    """A share of the project's units kept out of every experiment and rollout, to compare with
    everyone else over a long time (docs/analysts.md "Holdouts"). A unit is in it by the hash of
    its id with the holdout's own seed (`bucketing.holdout`). At most one is enabled per project;
    once started, its share and seed are frozen, and an ended holdout stays ended."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="holdouts")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    share = models.FloatField()
    seed = models.CharField(max_length=64, default=new_holdout_seed)
    enabled = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"], condition=Q(enabled=True), name="holdout_one_enabled"
            ),
            models.CheckConstraint(
                condition=Q(share__gt=0) & Q(share__lte=0.2), name="holdout_share_range"
            ),
            models.CheckConstraint(
                condition=Q(enabled=False) | Q(started_at__isnull=False),
                name="holdout_enabled_is_started",
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(enabled=False),
                name="holdout_ended_is_disabled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}: holdout {self.name}"

    @property
    def status(self) -> str:
        """``draft`` (never started), ``running`` or ``ended``."""
        if self.enabled:
            return "running"
        return "ended" if self.ended_at is not None else "draft"
