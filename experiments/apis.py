"""REST API for people (session or token auth): projects, metrics, experiments, lifecycle."""

import math
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bucketing.conditions import validate_condition
from core.errors import DomainError
from core.signing import SIGNATURE_HEADER, WEBHOOK_EVENT_HELP
from experiments import services
from experiments.models import (
    ApiKey,
    ApiKeyScope,
    DecisionPolicy,
    Direction,
    Experiment,
    ExperimentStatus,
    Membership,
    Metric,
    MetricKind,
    MetricRole,
    Project,
    Role,
)
from experiments.selectors import (
    audit_log_for_experiment,
    experiment_get,
    experiments_search,
    members_for_project,
    power_plan,
    project_get_for_user,
    projects_for_user,
    role_of,
    user_can,
)
from stats.power import PIPELINE_LOOKS, InvalidInput


def project_for(request: Request, slug: str, permission: str = "read") -> Project:
    project = project_get_for_user(request.user, slug)
    if not user_can(request.user, project, permission):
        raise PermissionDenied(
            f"Your role in '{slug}' ({role_of(request.user, project)}) may not {permission}."
        )
    return project


# --- projects -------------------------------------------------------------------------------


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["slug", "name", "client_key", "created_at", "role"]
        read_only_fields = ["client_key", "created_at", "role"]
        extra_kwargs = {"slug": {"validators": []}}

    def get_role(self, project: Project) -> str | None:
        return role_of(self.context["request"].user, project)


class ProjectListApi(APIView):
    @extend_schema(responses=ProjectSerializer(many=True))
    def get(self, request: Request) -> Response:
        projects = projects_for_user(request.user)
        return Response(ProjectSerializer(projects, many=True, context={"request": request}).data)

    @extend_schema(request=ProjectSerializer, responses={201: ProjectSerializer})
    def post(self, request: Request) -> Response:
        if not services.project_creation_allowed(request.user):
            raise PermissionDenied(services.PROJECT_CREATION_REFUSED)
        serializer = ProjectSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        project = services.project_create(actor=request.user, **serializer.validated_data)
        return Response(
            ProjectSerializer(project, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class ProjectSettingsSerializer(serializers.Serializer):
    slug = serializers.SlugField(read_only=True)
    name = serializers.CharField(max_length=200, required=False)
    webhook_url = serializers.URLField(max_length=200, required=False, allow_blank=True)
    webhook_events = serializers.SerializerMethodField()

    def get_webhook_events(self, project: Project) -> list[str]:
        return [name for name, _ in WEBHOOK_EVENT_HELP]


class ProjectSettingsApi(APIView):
    """A project's settings (name, webhook URL): admins only, like the settings page."""

    @extend_schema(responses=ProjectSettingsSerializer)
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        return Response(ProjectSettingsSerializer(proj).data)

    @extend_schema(request=ProjectSettingsSerializer, responses=ProjectSettingsSerializer)
    def patch(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = ProjectSettingsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            services.project_update(project=proj, actor=request.user, **serializer.validated_data)
        except DomainError as exc:
            raise serializers.ValidationError({exc.field or "detail": [exc.message]}) from exc
        return Response(ProjectSettingsSerializer(proj).data)


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField()
    signature_header = serializers.CharField()
    algorithm = serializers.CharField()


class WebhookSecretApi(APIView):
    """Reveal (audited) or rotate the project's webhook signing secret: admins only."""

    @extend_schema(
        request=None,
        responses=WebhookSecretSerializer,
        operation_id="projects_webhook_secret_action",
    )
    def post(self, request: Request, project: str, action: str) -> Response:
        proj = project_for(request, project, "manage")
        if action == "rotate":
            secret = services.project_webhook_secret_rotate(project=proj, actor=request.user)
        else:
            secret = services.project_webhook_secret_reveal(project=proj, actor=request.user)
        body = {"webhook_secret": secret, "signature_header": SIGNATURE_HEADER}
        body["algorithm"] = "HMAC-SHA256 of the raw request body, hex, prefixed 'sha256='"
        return Response(body, headers={"Cache-Control": "no-store"})


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)
    # Only to create the person's login when no user has that name yet; never returned.
    password = serializers.CharField(write_only=True, required=False, allow_blank=True)
    email = serializers.EmailField(write_only=True, required=False, allow_blank=True)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberListApi(APIView):
    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        rows = members_for_project(proj)
        return Response([{"username": m.user.get_username(), "role": m.role} for m in rows])

    @extend_schema(request=MemberSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_add(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(
            {"username": membership.user.get_username(), "role": membership.role},
            status=status.HTTP_201_CREATED,
        )


class MemberDetailApi(APIView):
    def _user(self, proj: Project, username: str) -> Any:
        membership = get_object_or_404(Membership, project=proj, user__username=username)
        return membership.user

    @extend_schema(request=MemberRoleSerializer, responses=MemberSerializer)
    def patch(self, request: Request, project: str, username: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_set(
            project=proj,
            user=self._user(proj, username),
            role=serializer.validated_data["role"],
            actor=request.user,
        )
        return Response({"username": username, "role": membership.role})

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, username: str) -> Response:
        proj = project_for(request, project, "manage")
        services.membership_remove(
            project=proj, user=self._user(proj, username), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeySerializer(serializers.ModelSerializer):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKeyScope.choices))

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyListApi(APIView):
    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        return Response(ApiKeySerializer(proj.api_keys.order_by("-created_at"), many=True).data)

    @extend_schema(request=ApiKeySerializer, responses={201: ApiKeySerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.api_key_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        data = dict(ApiKeySerializer(created.api_key).data)
        data["secret"] = created.secret  # shown once, never again
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, key_id: int) -> Response:
        proj = project_for(request, project, "manage")
        services.api_key_revoke(
            api_key=get_object_or_404(ApiKey, project=proj, pk=key_id), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- metrics --------------------------------------------------------------------------------


class MetricSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=MetricKind.choices, default=MetricKind.BINOMIAL)
    direction = serializers.ChoiceField(choices=Direction.choices, default=Direction.INCREASE)
    winsorize_quantile = serializers.FloatField(
        min_value=0.5, max_value=1.0, required=False, allow_null=True
    )
    conversion_window_hours = serializers.IntegerField(
        min_value=1, max_value=services.MAX_CONVERSION_WINDOW_HOURS, required=False
    )

    class Meta:
        model = Metric
        fields = [
            "key",
            "name",
            "description",
            "kind",
            "event_name",
            "denominator_event",
            "direction",
            "winsorize_quantile",
            "conversion_window_hours",
            "cuped",
            "created_at",
        ]
        read_only_fields = ["created_at"]
        extra_kwargs = {"key": {"validators": []}}


class MetricListApi(APIView):
    @extend_schema(responses=MetricSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        return Response(MetricSerializer(proj.metrics.all(), many=True).data)

    @extend_schema(request=MetricSerializer, responses={201: MetricSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "edit")
        serializer = MetricSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        metric = services.metric_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(MetricSerializer(metric).data, status=status.HTTP_201_CREATED)


class MetricDetailApi(APIView):
    @extend_schema(responses=MetricSerializer)
    def get(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project)
        return Response(MetricSerializer(get_object_or_404(Metric, project=proj, key=key)).data)

    @extend_schema(request=MetricSerializer, responses=MetricSerializer)
    def patch(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project, "edit")
        metric = get_object_or_404(Metric, project=proj, key=key)
        serializer = MetricSerializer(metric, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        metric = services.metric_update(
            metric=metric, actor=request.user, **serializer.validated_data
        )
        return Response(MetricSerializer(metric).data)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project, "edit")
        services.metric_delete(
            metric=get_object_or_404(Metric, project=proj, key=key), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- experiments ----------------------------------------------------------------------------


class VariantSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    weight = serializers.FloatField(min_value=0, max_value=1)
    is_control = serializers.BooleanField(default=False)
    value = serializers.JSONField(required=False, allow_null=True)


class ExperimentMetricSerializer(serializers.Serializer):
    metric = serializers.SlugField(max_length=100)
    role = serializers.ChoiceField(choices=MetricRole.choices, default=MetricRole.PRIMARY)
    non_inferiority_margin = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True
    )


class RampStageSerializer(serializers.Serializer):
    coverage = serializers.FloatField(min_value=0, max_value=1)
    min_hours = serializers.FloatField(
        min_value=0, max_value=services.MAX_RAMP_STAGE_HOURS, default=24
    )
    # Units per arm before the stage may advance (default: the stage's share of the plan).
    min_units = serializers.IntegerField(min_value=1, max_value=10**9, required=False)


class ExperimentSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    hypothesis = serializers.CharField(required=False, allow_blank=True)
    status = serializers.CharField(read_only=True)
    seed = serializers.CharField(max_length=64, required=False)
    hash_attribute = serializers.CharField(max_length=64, required=False)
    coverage = serializers.FloatField(min_value=0, max_value=1, required=False)
    targeting = serializers.JSONField(required=False)
    layer = serializers.CharField(max_length=64, required=False, allow_blank=True)
    layer_start = serializers.FloatField(min_value=0, max_value=1, required=False)
    layer_end = serializers.FloatField(min_value=0, max_value=1, required=False)
    alpha = serializers.FloatField(min_value=0.0001, max_value=0.49, required=False)
    planned_sample_size = serializers.IntegerField(
        min_value=2, max_value=services.MAX_PLANNED_SAMPLE_SIZE, required=False, allow_null=True
    )
    mde = serializers.FloatField(
        min_value=0, max_value=services.MAX_MDE, required=False, allow_null=True
    )
    decision_policy = serializers.ChoiceField(choices=DecisionPolicy.choices, required=False)
    auto_rollback = serializers.BooleanField(required=False)
    ramp_stages = RampStageSerializer(many=True, required=False)
    end_date = serializers.DateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True)
    metrics = ExperimentMetricSerializer(many=True, required=False)
    phase = serializers.IntegerField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    ended_at = serializers.DateTimeField(read_only=True, allow_null=True)
    decision_variant = serializers.CharField(read_only=True, allow_null=True)
    owner = serializers.CharField(
        read_only=True, source="owner.username", default=None, allow_null=True
    )

    def validate_variants(self, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # A PATCH validates nested rows partially: required fields and defaults are not applied.
        for i, v in enumerate(variants):
            missing = [f for f in ("key", "weight") if f not in v]
            if missing:
                raise serializers.ValidationError(
                    f"Variant {i + 1} needs {' and '.join(missing)} (send the whole list)."
                )
            v.setdefault("is_control", False)
        if len(variants) < 2:
            raise serializers.ValidationError("An experiment needs at least two variants.")
        total = sum(v["weight"] for v in variants)
        if abs(total - 1) > services.WEIGHT_TOLERANCE:
            raise serializers.ValidationError(f"Weights must sum to 1 (they sum to {total:g}).")
        if sum(1 for v in variants if v["is_control"]) != 1:
            raise serializers.ValidationError("Exactly one variant must have is_control true.")
        return variants

    def validate_metrics(self, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, m in enumerate(metrics):
            if "metric" not in m:
                raise serializers.ValidationError(f"Metric {i + 1} needs its metric key.")
            m.setdefault("role", MetricRole.PRIMARY)
        return metrics

    def validate_ramp_stages(self, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, stage in enumerate(stages):
            if "coverage" not in stage:
                raise serializers.ValidationError(f"Ramp stage {i + 1} needs a coverage.")
            stage.setdefault("min_hours", 24)
        return stages

    def validate_targeting(self, targeting: Any) -> dict:
        if targeting in (None, ""):
            return {}
        problems = validate_condition(targeting)
        if problems:
            raise serializers.ValidationError(problems)
        return targeting

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance if isinstance(self.instance, Experiment) else None
        start = data.get("layer_start", instance.layer_start if instance else 0.0)
        end = data.get("layer_end", instance.layer_end if instance else 1.0)
        if not 0 <= start < end <= 1:
            raise serializers.ValidationError(
                {"layer": ["The layer range must satisfy 0 <= layer_start < layer_end <= 1."]}
            )
        return data

    def to_representation(self, experiment: Experiment) -> dict[str, Any]:
        data = super().to_representation(experiment)
        data["variants"] = [
            {
                "key": v.key,
                "name": v.name,
                "weight": v.weight,
                "is_control": v.is_control,
                "value": v.value,
            }
            for v in experiment.variants.all()
        ]
        data["metrics"] = [
            {
                "metric": em.metric.key,
                "role": em.role,
                "non_inferiority_margin": em.non_inferiority_margin,
            }
            for em in experiment.experiment_metrics.all()
        ]
        return data


class ExperimentListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=[s.value for s in ExperimentStatus]),
            OpenApiParameter("owner", str, description="username of the owner"),
            OpenApiParameter("q", str, description="text in the key, name or hypothesis"),
        ],
        responses=ExperimentSerializer(many=True),
    )
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        experiments = experiments_search(
            proj,
            q=request.query_params.get("q", "").strip(),
            status=request.query_params.get("status", ""),
            owner=request.query_params.get("owner", ""),
        )
        return Response(ExperimentSerializer(experiments, many=True).data)

    @extend_schema(request=ExperimentSerializer, responses={201: ExperimentSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "edit")
        serializer = ExperimentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment = services.experiment_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(
            ExperimentSerializer(experiment_get(proj, experiment.key)).data,
            status=status.HTTP_201_CREATED,
        )


class ExperimentDetailApi(APIView):
    @extend_schema(responses=ExperimentSerializer)
    def get(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project)
        return Response(ExperimentSerializer(experiment_get(proj, key)).data)

    @extend_schema(request=ExperimentSerializer, responses=ExperimentSerializer)
    def patch(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project, "edit")
        experiment = experiment_get(proj, key)
        serializer = ExperimentSerializer(experiment, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.experiment_update(
            experiment=experiment, actor=request.user, **serializer.validated_data
        )
        return Response(ExperimentSerializer(experiment_get(proj, key)).data)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project, "edit")
        services.experiment_delete(experiment=experiment_get(proj, key), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="log.at")
    actor = serializers.CharField(source="log.actor_label")
    action = serializers.CharField(source="log.action")
    target = serializers.CharField(source="log.target")
    before = serializers.JSONField(source="log.before")
    after = serializers.JSONField(source="log.after")


class ExperimentAuditApi(APIView):
    """GET .../experiments/K/audit-log/: who changed what, newest first."""

    @extend_schema(responses=AuditEntrySerializer(many=True))
    def get(self, request: Request, project: str, key: str) -> Response:
        proj = project_for(request, project)
        entries = audit_log_for_experiment(experiment_get(proj, key))
        return Response(AuditEntrySerializer(entries, many=True).data)


class RampInput(serializers.Serializer):
    coverage = serializers.FloatField(min_value=0, max_value=1)


class ConcludeInput(serializers.Serializer):
    decision = serializers.CharField(max_length=100)


class RollbackInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class LifecycleInput(serializers.Serializer):
    """For the schema: what each action reads (start, pause and resume take no body)."""

    coverage = serializers.FloatField(required=False, help_text="ramp: the new coverage, (0, 1]")
    decision = serializers.CharField(
        required=False, help_text="conclude: the variant to ship (the control's key keeps it)"
    )
    reason = serializers.CharField(required=False, help_text="rollback: why, for the audit log")


LIFECYCLE = {
    "start": (services.experiment_start, None),
    "pause": (services.experiment_pause, None),
    "resume": (services.experiment_resume, None),
    "ramp": (services.experiment_ramp, RampInput),
    "conclude": (services.experiment_conclude, ConcludeInput),
    "rollback": (services.experiment_rollback, RollbackInput),
}


class ExperimentActionApi(APIView):
    """POST .../experiments/K/<start|pause|resume|ramp|conclude|rollback>."""

    @extend_schema(
        operation_id="projects_experiments_action",
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=list(LIFECYCLE), description="what to do"
            )
        ],
        request=LifecycleInput,
        responses=ExperimentSerializer,
    )
    def post(self, request: Request, project: str, key: str, action: str) -> Response:
        proj = project_for(request, project, "edit")
        experiment = experiment_get(proj, key)
        service, input_serializer = LIFECYCLE[action]
        arguments: dict[str, Any] = {}
        if input_serializer is not None:
            serializer = input_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            arguments = dict(serializer.validated_data)
        service(experiment=experiment, actor=request.user, **arguments)
        return Response(ExperimentSerializer(experiment_get(proj, key)).data)


# --- planning -------------------------------------------------------------------------------


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise serializers.ValidationError(f"Give {what} as numbers separated by commas.") from None
    if not all(math.isfinite(v) for v in values):
        raise serializers.ValidationError(f"Give {what} as finite numbers.")
    return values


class PowerInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=MetricKind.choices, default=MetricKind.BINOMIAL)
    baseline = serializers.FloatField(
        help_text="Baseline conversion rate (binomial, 0.1 = 10%) or mean per unit."
    )
    variance = serializers.FloatField(
        required=False, allow_null=True, help_text="Per-unit variance (not binomial)."
    )
    mde = serializers.FloatField(
        required=False, allow_null=True, help_text="Relative minimum detectable effect (0.05)."
    )
    sample_size = serializers.IntegerField(
        required=False, allow_null=True, min_value=4, help_text="Planned units over all variants."
    )
    alpha = serializers.FloatField(default=0.05, min_value=0.0001, max_value=0.49)
    power = serializers.FloatField(default=0.8, min_value=0.5, max_value=0.99)
    variants = serializers.IntegerField(default=2, min_value=2, max_value=20)
    weights = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="The variants' weights, comma-separated (0.9,0.1); default an even split.",
    )
    control = serializers.IntegerField(
        default=0, min_value=0, help_text="Index of the control among the weights."
    )
    primary_metrics = serializers.IntegerField(default=1, min_value=1, max_value=20)
    daily_units = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="New units a day at full coverage (for the duration).",
    )
    coverage = serializers.FloatField(default=1.0, min_value=0.0001, max_value=1)
    ramp = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Ramp plan as coverage:min_hours stages, comma-separated (0.05:24,0.5:24,1:0); "
        "replaces coverage for the duration.",
    )
    looks = serializers.IntegerField(
        default=PIPELINE_LOOKS,
        min_value=1,
        max_value=PIPELINE_LOOKS,
        help_text="Group-sequential looks; the analysis counts up to 100 (one per 1% of "
        "information).",
    )
    method = serializers.ChoiceField(
        choices=["group_sequential", "sequential", "fixed"], default="group_sequential"
    )

    def validate_weights(self, value: str) -> list[float] | None:
        if not value.strip():
            return None
        weights = _numbers(value, "the weights")
        if len(weights) < 2:
            raise serializers.ValidationError("Give a weight for each variant (at least two).")
        if len(weights) > 20:
            raise serializers.ValidationError("At most 20 variants.")
        if any(w <= 0 for w in weights):
            raise serializers.ValidationError("Every weight must be above 0.")
        return weights

    def validate_ramp(self, value: str) -> list[dict[str, float]]:
        stages = []
        for k, part in enumerate(p for p in value.split(",") if p.strip()):
            pieces = part.split(":")
            if len(pieces) != 2:
                raise serializers.ValidationError(
                    f"Stage {k + 1}: write coverage:min_hours, e.g. 0.05:24."
                )
            coverage, hours = _numbers(",".join(pieces), "coverage and hours")
            if not 0 < coverage <= 1:
                raise serializers.ValidationError(
                    f"Stage {k + 1}: coverage must be above 0 and at most 1."
                )
            if hours < 0:
                raise serializers.ValidationError(f"Stage {k + 1}: hours cannot be negative.")
            stages.append({"coverage": coverage, "min_hours": hours})
        return stages

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["kind"] == MetricKind.BINOMIAL:
            if not 0 < data["baseline"] < 1:
                raise serializers.ValidationError(
                    {"baseline": ["A conversion rate is between 0 and 1 (0.1 = 10%)."]}
                )
        elif data.get("variance") is None:
            raise serializers.ValidationError(
                {"variance": ["Give the per-unit variance (the standard deviation squared)."]}
            )
        elif not data["variance"] > 0:
            raise serializers.ValidationError(
                {"variance": ["The variance must be above 0 (the standard deviation squared)."]}
            )
        if data.get("mde") is None and data.get("sample_size") is None:
            raise serializers.ValidationError(
                {"mde": ["Give an MDE (0.05 = +5%) or a planned sample size."]}
            )
        if data.get("mde") is not None and data["mde"] <= 0:
            raise serializers.ValidationError({"mde": ["The MDE must be above 0 (0.05 = +5%)."]})
        weights = data.get("weights")
        if weights:
            if "variants" in self.initial_data and data["variants"] != len(weights):
                raise serializers.ValidationError(
                    {"weights": [f"{len(weights)} weights for {data['variants']} variants."]}
                )
            data["variants"] = len(weights)
        if data["control"] >= data["variants"]:
            raise serializers.ValidationError(
                {"control": [f"The control is one of the {data['variants']} variants (0 first)."]}
            )
        if data.get("daily_units") is not None and data["daily_units"] <= 0:
            data["daily_units"] = None
        return data


class PowerOutput(serializers.Serializer):
    method = serializers.CharField()
    alpha_per_test = serializers.FloatField()
    per_arm = serializers.IntegerField(help_text="Units per variant (the largest arm if uneven).")
    arms = serializers.ListField(child=serializers.IntegerField(), help_text="Units per variant.")
    weights = serializers.ListField(child=serializers.FloatField())
    control = serializers.IntegerField()
    deciding = serializers.IntegerField(help_text="The treatment whose comparison needs most.")
    total = serializers.IntegerField()
    fixed_total = serializers.IntegerField()
    inflation = serializers.FloatField()
    looks = serializers.IntegerField()
    mde = serializers.FloatField()
    days = serializers.FloatField(allow_null=True)


class PowerApi(APIView):
    """GET /api/v1/power: the pre-launch calculator (sample size and duration, or the MDE).
    Input that no experiment can satisfy is a 400 naming the field, e.g. {"mde": ["..."]}."""

    @extend_schema(parameters=[PowerInput], responses=PowerOutput)
    def get(self, request: Request) -> Response:
        serializer = PowerInput(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        try:
            plan = power_plan(**serializer.validated_data)
        except InvalidInput as exc:
            return Response(
                {exc.field: [f"{str(exc)[:1].upper()}{str(exc)[1:]}."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            return Response(
                {"detail": f"Cannot size this experiment: {exc}."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(PowerOutput(plan).data)

