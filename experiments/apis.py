"""REST API for people (session or token auth): projects, metrics, experiments, lifecycle."""

from typing import Any

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import services
from experiments.models import (
    ApiKey,
    ApiKeyScope,
    DecisionPolicy,
    Direction,
    Experiment,
    Membership,
    Metric,
    MetricKind,
    MetricRole,
    Project,
    Role,
)
from experiments.selectors import (
    experiment_get,
    experiments_for_project,
    project_get_for_user,
    projects_for_user,
    role_of,
    user_can,
)


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
        serializer = ProjectSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        project = services.project_create(owner=request.user, **serializer.validated_data)
        return Response(
            ProjectSerializer(project, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


class MemberListApi(APIView):
    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        rows = Membership.objects.filter(project=proj).select_related("user")
        return Response([{"username": m.user.get_username(), "role": m.role} for m in rows])

    @extend_schema(request=MemberSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = (
            get_user_model().objects.filter(username=serializer.validated_data["username"]).first()
        )
        if user is None:
            raise serializers.ValidationError({"username": ["No such user."]})
        services.membership_set(
            project=proj, user=user, role=serializer.validated_data["role"], actor=request.user
        )
        return Response(serializer.validated_data, status=status.HTTP_201_CREATED)


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
    min_hours = serializers.FloatField(min_value=0, default=24)


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
    planned_sample_size = serializers.IntegerField(min_value=2, required=False, allow_null=True)
    mde = serializers.FloatField(min_value=0, required=False, allow_null=True)
    decision_policy = serializers.ChoiceField(choices=DecisionPolicy.choices, required=False)
    auto_rollback = serializers.BooleanField(required=False)
    ramp_stages = RampStageSerializer(many=True, required=False)
    end_date = serializers.DateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True)
    metrics = ExperimentMetricSerializer(many=True, required=False)
    phase = serializers.IntegerField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True)
    ended_at = serializers.DateTimeField(read_only=True)
    decision_variant = serializers.CharField(read_only=True)
    owner = serializers.CharField(read_only=True, source="owner.username", default=None)

    def validate_variants(self, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        total = sum(v["weight"] for v in variants)
        if len(variants) < 2:
            raise serializers.ValidationError("An experiment needs at least two variants.")
        if abs(total - 1) > services.WEIGHT_TOLERANCE:
            raise serializers.ValidationError(f"Weights must sum to 1 (they sum to {total:g}).")
        if sum(1 for v in variants if v["is_control"]) != 1:
            raise serializers.ValidationError("Exactly one variant must have is_control true.")
        return variants

    def validate_targeting(self, targeting: Any) -> dict:
        if targeting in (None, ""):
            return {}
        if not isinstance(targeting, dict):
            raise serializers.ValidationError("Targeting must be a JSON object (a condition).")
        return targeting

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
    @extend_schema(responses=ExperimentSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        experiments = experiments_for_project(proj)
        if status_filter := request.query_params.get("status"):
            experiments = experiments.filter(status=status_filter)
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


class RampInput(serializers.Serializer):
    coverage = serializers.FloatField(min_value=0, max_value=1)


class ConcludeInput(serializers.Serializer):
    decision = serializers.CharField(max_length=100)


class RollbackInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


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

    @extend_schema(request=None, responses=ExperimentSerializer)
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
