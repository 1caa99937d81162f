"""The metric catalog."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import services
from experiments.apis.access import project_for
from experiments.filters import MAX_FILTERS, MAX_PROPERTY_NAME_LENGTH, OPS
from experiments.models import Direction, Metric, MetricKind


class MetricFilterSerializer(serializers.Serializer):
    """One filter on the metric's events' properties (docs/analysts.md)."""

    property = serializers.CharField(
        max_length=MAX_PROPERTY_NAME_LENGTH, help_text="A top-level property of the events."
    )
    op = serializers.ChoiceField(choices=OPS)
    value = serializers.JSONField(
        help_text="A string, number or boolean; a list of them for 'in'; a number for "
        "gt/gte/lt/lte; a string for 'contains'."
    )


class MetricSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=MetricKind.choices, default=MetricKind.BINOMIAL)
    direction = serializers.ChoiceField(choices=Direction.choices, default=Direction.INCREASE)
    winsorize_quantile = serializers.FloatField(
        min_value=0.5, max_value=1.0, required=False, allow_null=True
    )
    quantile = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, allow_null=True)
    conversion_window_hours = serializers.IntegerField(
        min_value=1, max_value=services.MAX_CONVERSION_WINDOW_HOURS, required=False
    )
    filters = serializers.ListField(
        child=MetricFilterSerializer(),
        max_length=MAX_FILTERS,
        required=False,
        help_text="Only the events whose properties pass every filter count.",
    )
    value_property = serializers.CharField(
        max_length=MAX_PROPERTY_NAME_LENGTH,
        required=False,
        allow_blank=True,
        help_text="Mean, ratio and quantile metrics: the property whose number is the event's "
        "value ('' for the event's value).",
    )

    class Meta:
        model = Metric
        # The fields metric_create and metric_update take, listed once in the service.
        fields = ["key", *services.METRIC_FIELDS, "created_at"]
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
