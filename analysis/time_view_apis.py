"""Time views API: the daily lift and the novelty check of an experiment, as the last analysis
run stored them (analysis/time_views.py; shapes in docs/analysts.md)."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analysis.api_schemas import DailyLiftSchema, NoveltySchema
from analysis.apis import ResultsAuthMixin, readable_project
from analysis.time_aggregation import MAX_CALENDAR_DAYS
from analysis.time_views import daily_json, novelty_json, time_view_get
from experiments.models import Experiment
from experiments.selectors import experiment_get


class _MetricsQuery(serializers.Serializer):
    """``metric``: metric keys of the experiment, repeated or comma-separated (default all)."""

    metric = serializers.ListField(child=serializers.CharField(max_length=100), required=False)

    def __init__(self, *args: Any, experiment: Experiment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.experiment = experiment

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        keys = [k.strip() for v in data.getlist("metric") for k in v.split(",") if k.strip()]
        plain = {k: data.get(k) for k in data if k != "metric"}
        return super().to_internal_value({**plain, **({"metric": keys} if keys else {})})

    def validate_metric(self, keys: list[str]) -> list[str]:
        known = list(self.experiment.experiment_metrics.values_list("metric__key", flat=True))
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise serializers.ValidationError(
                f"'{unknown[0]}' is not a metric of this experiment; use one of "
                f"{', '.join(known) or '(none)'}."
            )
        return keys


class _DailyQuery(_MetricsQuery):
    days = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_CALENDAR_DAYS,
        error_messages={
            "invalid": "days must be a whole number of days.",
            "min_value": "days must be at least 1.",
            "max_value": f"days must be at most {MAX_CALENDAR_DAYS}: the view keeps no more.",
        },
    )


METRIC_PARAMETER = OpenApiParameter(
    "metric",
    str,
    many=True,
    description="only these metric keys (repeat the parameter or separate with commas)",
)


def _read(request: Request, project: str, key: str, query_class: type[_MetricsQuery]) -> tuple:
    """The experiment, its stored views and the checked query (a 400 names a bad field)."""
    experiment = experiment_get(readable_project(request, project), key)
    query = query_class(data=request.query_params, experiment=experiment)
    query.is_valid(raise_exception=True)
    return experiment, time_view_get(experiment), query.validated_data


class DailyLiftApi(ResultsAuthMixin, APIView):
    @extend_schema(
        parameters=[
            METRIC_PARAMETER,
            OpenApiParameter(
                "days",
                int,
                description=f"only the last N calendar days (1 to {MAX_CALENDAR_DAYS})",
            ),
        ],
        responses={200: DailyLiftSchema},
        description="The lift of each treatment arm on each UTC calendar day's data, with "
        "fixed-horizon, exploratory intervals (docs/analysts.md, 'Time views').",
    )
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment, view, q = _read(request, project, key, _DailyQuery)
        return Response(daily_json(experiment, view, q.get("metric", []), q.get("days")))


class NoveltyApi(ResultsAuthMixin, APIView):
    @extend_schema(
        parameters=[METRIC_PARAMETER],
        responses={200: NoveltySchema},
        description="The lift by day since each unit's first exposure, and per metric and arm "
        "the test for a fading effect (docs/analysts.md, 'Time views').",
    )
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment, view, q = _read(request, project, key, _MetricsQuery)
        return Response(novelty_json(experiment, view, q.get("metric", [])))
