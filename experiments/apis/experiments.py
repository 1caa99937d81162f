"""Experiment definitions, their audit log and lifecycle actions."""

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import DomainError
from experiments import services
from experiments.apis.access import project_for
from experiments.models import (
    RAMP_STAGE_DEFAULT_HOURS,
    DecisionPolicy,
    Experiment,
    ExperimentStatus,
    MetricRole,
)
from experiments.selectors import audit_log_for_experiment, experiment_get, experiments_search
from experiments.services.rules import (
    check_layer,
    check_metric_entries,
    check_ramp,
    check_tags,
    check_targeting,
    check_variants,
)


def _service_rule(check: Callable[..., None], *args: Any) -> None:
    """Apply a rule of the services (their only home): a refusal becomes a 400 on its field."""
    try:
        check(*args)
    except DomainError as exc:
        raise serializers.ValidationError({exc.field: [exc.message]}) from exc


def _field_rule(check: Callable[..., None], *args: Any) -> None:
    """The same, inside a field's own validate_<field> (DRF files the error under the field)."""
    try:
        check(*args)
    except DomainError as exc:
        raise serializers.ValidationError(exc.message) from exc


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
        min_value=0, max_value=services.MAX_RAMP_STAGE_HOURS, default=RAMP_STAGE_DEFAULT_HOURS
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
    segment = serializers.SlugField(
        max_length=100,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="The key of a saved segment of the project, AND-ed with the targeting "
        "condition; null (or empty) for none.",
    )
    layer = serializers.CharField(max_length=64, required=False, allow_blank=True)
    layer_start = serializers.FloatField(min_value=0, max_value=1, required=False)
    layer_end = serializers.FloatField(min_value=0, max_value=1, required=False)
    alpha = serializers.FloatField(
        min_value=services.ALPHA_MIN, max_value=services.ALPHA_MAX, required=False
    )
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
    rationale = serializers.CharField(read_only=True)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=services.TAG_MAX),
        max_length=services.MAX_TAGS,
        required=False,
        help_text="Short words for the library of concluded experiments",
    )
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
        _field_rule(check_variants, variants)
        return variants

    def validate_metrics(self, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _field_rule(check_metric_entries, metrics)
        for m in metrics:
            m.setdefault("role", MetricRole.PRIMARY)
        return metrics

    def validate_ramp_stages(self, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, stage in enumerate(stages):
            if "coverage" not in stage:
                raise serializers.ValidationError(f"Ramp stage {i + 1} needs a coverage.")
            stage.setdefault("min_hours", RAMP_STAGE_DEFAULT_HOURS)
        _field_rule(check_ramp, stages)
        return stages

    def validate_tags(self, tags: list[str]) -> list[str]:
        try:
            return check_tags(tags)
        except DomainError as exc:
            raise serializers.ValidationError(exc.message) from exc

    def validate_targeting(self, targeting: Any) -> dict:
        if targeting in (None, ""):
            return {}
        _field_rule(check_targeting, targeting)
        return targeting

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance if isinstance(self.instance, Experiment) else None
        start = data.get("layer_start", instance.layer_start if instance else 0.0)
        end = data.get("layer_end", instance.layer_end if instance else 1.0)
        _service_rule(check_layer, start, end)
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
    rationale = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=services.RATIONALE_MAX
    )


class RollbackInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class LifecycleInput(serializers.Serializer):
    """For the schema: what each action reads (start, pause and resume take no body)."""

    coverage = serializers.FloatField(required=False, help_text="ramp: the new coverage, (0, 1]")
    decision = serializers.CharField(
        required=False, help_text="conclude: the variant to ship (the control's key keeps it)"
    )
    rationale = serializers.CharField(
        required=False,
        help_text="conclude: why; required when the decision goes against the latest "
        "recommendation",
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
