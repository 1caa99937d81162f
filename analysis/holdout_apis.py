"""The holdout's comparison over the API: the latest stored snapshot with the holdout, its
history, and queueing a run (202). Members and the project's read-scoped keys read."""

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analysis.apis import ResultsAuthMixin, readable_project
from analysis.dispatch import enqueue_holdout_run
from analysis.holdout_results import holdout_history, holdout_latest, holdout_snapshot_json
from analysis.holdouts import ALPHA, METHOD, TUNING_N
from experiments.apis import project_for
from experiments.apis.holdouts import HoldoutSerializer
from experiments.holdouts import holdout_get


class HoldoutRowSchema(serializers.Serializer):
    """One metric: the general sample against the holdout (the holdout is the control)."""

    metric = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    direction = serializers.CharField(help_text="increase or decrease: which side is better")
    holdout_n = serializers.IntegerField()
    general_n = serializers.IntegerField()
    holdout_mean = serializers.FloatField(allow_null=True, required=False)
    general_mean = serializers.FloatField(allow_null=True, required=False)
    lift_abs = serializers.FloatField(allow_null=True, required=False)
    lift_rel = serializers.FloatField(
        allow_null=True, required=False, help_text="general over holdout, relative"
    )
    ci_low = serializers.FloatField(
        allow_null=True, required=False, help_text="relative, always valid (confidence sequence)"
    )
    ci_high = serializers.FloatField(allow_null=True, required=False)
    ci_abs_low = serializers.FloatField(allow_null=True, required=False)
    ci_abs_high = serializers.FloatField(allow_null=True, required=False)
    p_value = serializers.FloatField(allow_null=True, required=False, help_text="always valid")
    adjusted_p_value = serializers.FloatField(
        allow_null=True, help_text="Benjamini-Hochberg across the metrics"
    )
    fixed_ci_low = serializers.FloatField(allow_null=True, required=False)
    fixed_ci_high = serializers.FloatField(allow_null=True, required=False)
    fixed_p_value = serializers.FloatField(
        allow_null=True, required=False, help_text="fixed-horizon: not valid under peeking"
    )
    status = serializers.CharField(help_text="better, worse, neutral or error")
    message = serializers.CharField(allow_null=True, required=False)
    error = serializers.CharField(allow_null=True, required=False)


class HoldoutComparisonSchema(serializers.Serializer):
    computed_at = serializers.DateTimeField()
    data_through = serializers.DateTimeField()
    method = serializers.CharField()
    units = inline_serializer(
        "HoldoutUnits",
        {"holdout": serializers.IntegerField(), "general": serializers.IntegerField()},
    )
    srm_p_value = serializers.FloatField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())
    metrics = HoldoutRowSchema(many=True)


class HoldoutResultsSchema(serializers.Serializer):
    holdout = HoldoutSerializer()
    alpha = serializers.FloatField()
    method = serializers.CharField()
    tuning_n = serializers.IntegerField()
    comparison = HoldoutComparisonSchema(allow_null=True)
    history = HoldoutComparisonSchema(many=True, required=False)


class HoldoutResultsQuery(serializers.Serializer):
    history = serializers.BooleanField(
        required=False, default=False, help_text="also every stored snapshot, oldest first"
    )


class HoldoutResultsApi(ResultsAuthMixin, APIView):
    """GET .../holdouts/<id>/results[?history=true]."""

    @extend_schema(parameters=[HoldoutResultsQuery], responses={200: HoldoutResultsSchema})
    def get(self, request: Request, project: str, holdout_id: int) -> Response:
        holdout = holdout_get(readable_project(request, project), holdout_id)
        query = HoldoutResultsQuery(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        latest = holdout_latest(holdout)
        data = {
            "holdout": HoldoutSerializer(holdout).data,
            "alpha": ALPHA,
            "method": METHOD,
            "tuning_n": TUNING_N,
            "comparison": holdout_snapshot_json(latest) if latest is not None else None,
        }
        if query.validated_data["history"]:
            data["history"] = [holdout_snapshot_json(s) for s in holdout_history(holdout)]
        return Response(data)


class HoldoutAnalyzeApi(APIView):
    """POST .../holdouts/<id>/analyze: compare now, in the worker (202)."""

    @extend_schema(
        request=None,
        responses={202: inline_serializer("HoldoutQueued", {"status": serializers.CharField()})},
    )
    def post(self, request: Request, project: str, holdout_id: int) -> Response:
        holdout = holdout_get(project_for(request, project, "read"), holdout_id)
        if holdout.started_at is None:
            raise ValidationError(
                {"status": ["The holdout has not started: there is nothing to compare yet."]}
            )
        with transaction.atomic():
            transaction.on_commit(lambda: enqueue_holdout_run(holdout.pk))
        return Response({"status": "queued"}, status=status.HTTP_202_ACCEPTED)
