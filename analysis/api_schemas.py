"""Response shapes of the results API, for the OpenAPI schema only (the views build plain dicts).

They mirror `analysis.selectors.snapshot_json` / `row_json`; `tests/analysis/test_api_schema.py`
checks the schema names their fields.
"""

from rest_framework import serializers

from analysis.models import RunStatus


class ResultRowSchema(serializers.Serializer):
    """One treatment arm of one metric, compared with control."""

    metric = serializers.CharField()
    kind = serializers.CharField(help_text="binomial, count, mean or ratio")
    role = serializers.CharField(help_text="primary, guardrail or secondary")
    variant = serializers.CharField()
    control_n = serializers.IntegerField(allow_null=True)
    variant_n = serializers.IntegerField()
    control_mean = serializers.FloatField(allow_null=True)
    variant_mean = serializers.FloatField(allow_null=True)
    lift_abs = serializers.FloatField(allow_null=True)
    lift_rel = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    fixed_p_value = serializers.FloatField(allow_null=True)
    adjusted_p_value = serializers.FloatField(
        allow_null=True, help_text="secondary metrics: Benjamini-Hochberg adjusted p-value"
    )
    alpha = serializers.FloatField(allow_null=True, help_text="the level this row was tested at")
    method = serializers.CharField(allow_blank=True)
    significant = serializers.BooleanField()
    status = serializers.CharField(
        allow_blank=True, help_text="error, improved, harmed, non_inferior or neutral"
    )
    margin = serializers.FloatField(
        allow_null=True, help_text="the margin this comparison was judged against"
    )
    details = serializers.DictField(help_text="everything else the stats engine reported")


class ArmSchema(serializers.Serializer):
    """The decision on one treatment arm."""

    variant = serializers.CharField()
    action = serializers.CharField(help_text="keep, extend or rollback")
    reasons = serializers.ListField(child=serializers.CharField(), required=False)
    harm = serializers.BooleanField(required=False)
    cause = serializers.CharField(required=False, allow_blank=True)
    extra_units = serializers.IntegerField(required=False, allow_null=True)
    extra_days = serializers.FloatField(required=False, allow_null=True)


class HealthSchema(serializers.Serializer):
    """Health checks of the snapshot (empty before the first analysis)."""

    srm_p_value = serializers.FloatField(required=False, allow_null=True)
    srm_flagged = serializers.BooleanField(required=False)
    units = serializers.IntegerField(required=False)
    units_by_variant = serializers.DictField(child=serializers.IntegerField(), required=False)
    multi_variant_units = serializers.IntegerField(required=False)
    multi_variant_share = serializers.FloatField(required=False, allow_null=True)
    assignment_mismatch_units = serializers.IntegerField(required=False)
    warnings = serializers.ListField(child=serializers.CharField(), required=False)
    healthy = serializers.BooleanField(required=False)
    findings = serializers.ListField(child=serializers.DictField(), required=False)
    metric_errors = serializers.DictField(child=serializers.CharField(), required=False)


class RecommendationSchema(serializers.Serializer):
    action = serializers.CharField(help_text="keep, extend or rollback")
    cause = serializers.CharField(
        allow_blank=True,
        help_text="unhealthy, harm, improvement, non_inferior, no_improvement, inconclusive "
        "or collecting",
    )
    reasons = serializers.ListField(child=serializers.CharField())
    ship_variant = serializers.CharField(allow_null=True, help_text="keep: the arm to ship")
    extra_units = serializers.IntegerField(
        allow_null=True, help_text="extend: estimated extra units, all arms"
    )
    extra_days = serializers.FloatField(allow_null=True, help_text="extend: estimated days to go")


class SnapshotSchema(serializers.Serializer):
    """The analysis of an experiment at one data cut-off."""

    experiment = serializers.CharField()
    snapshot_id = serializers.IntegerField()
    computed_at = serializers.DateTimeField()
    data_through = serializers.DateTimeField()
    phase = serializers.IntegerField()
    method = serializers.CharField()
    look_kind = serializers.CharField(help_text="collecting, look or final")
    total_units = serializers.IntegerField()
    metrics = ResultRowSchema(many=True)
    arms = ArmSchema(many=True)
    health = HealthSchema()
    recommendation = RecommendationSchema()
    actions = serializers.ListField(
        child=serializers.DictField(),
        help_text='what the automation did: {"action", "at", "reason", ...}',
    )


class LastRunSchema(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text=", ".join(RunStatus.values))
    error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class ResultsSchema(SnapshotSchema):
    """The latest snapshot and the latest run. Before the first analysis only `experiment`,
    `computed_at` (null), `metrics` (empty), `health` (empty), `recommendation` (null) and
    `last_run` are present."""

    snapshot_id = serializers.IntegerField(required=False)
    computed_at = serializers.DateTimeField(allow_null=True)
    data_through = serializers.DateTimeField(required=False)
    phase = serializers.IntegerField(required=False)
    method = serializers.CharField(required=False)
    look_kind = serializers.CharField(required=False, help_text="collecting, look or final")
    total_units = serializers.IntegerField(required=False)
    arms = ArmSchema(many=True, required=False)
    recommendation = RecommendationSchema(allow_null=True)
    actions = serializers.ListField(child=serializers.DictField(), required=False)
    last_run = LastRunSchema(allow_null=True)


class ResultsHistorySchema(serializers.Serializer):
    experiment = serializers.CharField()
    snapshots = SnapshotSchema(many=True, help_text="oldest data cut-off first")
    page = serializers.IntegerField(required=False)
    limit = serializers.IntegerField(required=False)
    total = serializers.IntegerField(required=False, help_text="snapshots in all pages")
    pages = serializers.IntegerField(required=False)
    next_page = serializers.IntegerField(required=False, allow_null=True)


class AnalyzeQueuedSchema(serializers.Serializer):
    run_id = serializers.IntegerField()
    status = serializers.CharField(help_text="queued")


class SufficientStatsSchema(serializers.Serializer):
    """One arm of one metric in one level: the per-unit sums (docs/statistics.md section 1)."""

    n = serializers.IntegerField()
    sum = serializers.FloatField()
    sum_sq = serializers.FloatField()
    den_sum = serializers.FloatField()
    den_sum_sq = serializers.FloatField()
    sum_prod = serializers.FloatField()
    cov_sum = serializers.FloatField()
    cov_sum_sq = serializers.FloatField()
    cov_sum_prod = serializers.FloatField()


class BreakdownRowSchema(ResultRowSchema):
    """A treatment arm of a metric within one level: fixed-horizon, intervals at the
    breakdown's false-coverage-rate level, ``adjusted_p_value`` Benjamini-Hochberg over the
    breakdown, ``significant`` when it is below the experiment's alpha."""

    control_stats = SufficientStatsSchema()
    variant_stats = SufficientStatsSchema()


class BreakdownLevelSchema(serializers.Serializer):
    value = serializers.CharField(
        help_text="the attribute's value; '(other)' for values past the cap, '(none)' for units "
        "without one"
    )
    kind = serializers.CharField(help_text="value, other or none")
    units = serializers.IntegerField(help_text="analysed units in the level, all variants")
    units_by_variant = serializers.DictField(child=serializers.IntegerField())
    metrics = BreakdownRowSchema(many=True)


class HeterogeneitySchema(serializers.Serializer):
    """Cochran's Q across the levels of one (metric, treatment arm)."""

    metric = serializers.CharField()
    variant = serializers.CharField()
    p_value = serializers.FloatField(allow_null=True, help_text="chi-square with levels - 1 df")
    adjusted_p_value = serializers.FloatField(
        allow_null=True, help_text="Holm over the breakdown's (metric, arm) tests"
    )
    significant = serializers.BooleanField()
    q = serializers.FloatField(allow_null=True)
    df = serializers.IntegerField()
    levels = serializers.IntegerField(help_text="levels with a usable relative lift")
    i_squared = serializers.FloatField(allow_null=True)


class BreakdownCorrectionSchema(serializers.Serializer):
    levels = serializers.CharField(help_text="benjamini_hochberg")
    heterogeneity = serializers.CharField(help_text="holm")
    alpha = serializers.FloatField()
    tests = serializers.IntegerField()
    rejected = serializers.IntegerField()
    interval_alpha = serializers.FloatField()


class BreakdownSchema(serializers.Serializer):
    """The results per level of a unit attribute sent with exposures (docs/analysts.md,
    "Dimension breakdowns"): exploratory, with their own multiple-testing note."""

    experiment = serializers.CharField()
    dimension = serializers.CharField()
    data_through = serializers.DateTimeField()
    snapshot_id = serializers.IntegerField(
        allow_null=True, help_text="the snapshot whose cut-off the breakdown uses"
    )
    phase = serializers.IntegerField()
    method = serializers.CharField(help_text="fixed")
    exploratory = serializers.BooleanField()
    max_levels = serializers.IntegerField()
    levels = BreakdownLevelSchema(many=True)
    heterogeneity = HeterogeneitySchema(many=True)
    correction = BreakdownCorrectionSchema()
    note = serializers.CharField(help_text="how to read the breakdown's p-values and intervals")
    metric_errors = serializers.DictField(child=serializers.CharField())


# --- time views (analysis/time_views.py; docs/analysts.md "Time views") --------------------------


class DayEffectSchema(serializers.Serializer):
    """One treatment arm against control on one day's data; intervals fixed-horizon at the
    experiment's alpha and not corrected for the number of days (exploratory)."""

    metric = serializers.CharField()
    variant = serializers.CharField()
    control_n = serializers.IntegerField(help_text="control units counted that day")
    variant_n = serializers.IntegerField()
    control_mean = serializers.FloatField(allow_null=True)
    variant_mean = serializers.FloatField(allow_null=True)
    lift_abs = serializers.FloatField(allow_null=True)
    abs_ci_low = serializers.FloatField(allow_null=True, help_text="Welch interval")
    abs_ci_high = serializers.FloatField(allow_null=True)
    lift_rel = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True, help_text="relative lift, delta method")
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="two-sided, absolute difference")


class CalendarDaySchema(DayEffectSchema):
    date = serializers.DateField(help_text="the UTC calendar day")
    partial = serializers.BooleanField(help_text="the cut-off's day, not over yet")


class ExposureDaySchema(DayEffectSchema):
    day = serializers.IntegerField(help_text="days since each unit's first exposure, from 0")


class TimeViewHeaderSchema(serializers.Serializer):
    experiment = serializers.CharField()
    timezone = serializers.CharField(help_text="UTC: days run from midnight to midnight UTC")
    computed_at = serializers.DateTimeField(
        allow_null=True, help_text="null until an analysis run has computed the views"
    )
    data_through = serializers.DateTimeField(allow_null=True, help_text="the data cut-off")
    phase = serializers.IntegerField(allow_null=True)
    alpha = serializers.FloatField(help_text="two-sided level of the intervals")
    max_days = serializers.IntegerField(help_text="the most days the view keeps")
    errors = serializers.DictField(
        child=serializers.CharField(), help_text="metric key -> why it has no time views"
    )


class DailyLiftSchema(TimeViewHeaderSchema):
    first_day = serializers.DateField(allow_null=True, help_text="the first calendar day kept")
    days = CalendarDaySchema(many=True, help_text="oldest day first")


class NoveltyTrendSchema(serializers.Serializer):
    """The weighted least squares line of the per-day relative lifts on the day since
    exposure, and the one-sided test that the effect fades (moves toward zero)."""

    metric = serializers.CharField()
    variant = serializers.CharField()
    days = serializers.IntegerField(help_text="days with a usable relative lift")
    slope = serializers.FloatField(allow_null=True, help_text="change of the lift per day")
    se = serializers.FloatField(allow_null=True)
    z = serializers.FloatField(allow_null=True)
    intercept = serializers.FloatField(allow_null=True, help_text="the line at day 0")
    weighted_mean = serializers.FloatField(allow_null=True, help_text="its sign: toward zero")
    dispersion = serializers.FloatField(allow_null=True, help_text="weighted residual variance")
    p_value = serializers.FloatField(allow_null=True, help_text="one-sided, fading")
    adjusted_p_value = serializers.FloatField(
        allow_null=True, help_text="Holm over the experiment's metrics x treatment arms"
    )
    fading = serializers.BooleanField()
    verdict = serializers.ChoiceField(choices=["fading", "not_fading", "not_tested"])
    reason = serializers.CharField(required=False, help_text="not_tested: why")


class NoveltySchema(TimeViewHeaderSchema):
    days = ExposureDaySchema(many=True)
    trends = NoveltyTrendSchema(many=True)
