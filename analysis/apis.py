"""Results API: latest snapshot, history, queueing an analysis run, and exports."""

from typing import Any

from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analysis.api_schemas import (
    AnalyzeQueuedSchema,
    BreakdownSchema,
    ResultsHistorySchema,
    ResultsSchema,
)
from analysis.breakdown import MAX_BREAKDOWN_LEVELS, BreakdownTooSlow, experiment_breakdown
from analysis.breakdown_aggregation import BREAKDOWN_LEVELS
from analysis.breakdown_exports import breakdown_export_filename, breakdown_export_stream
from analysis.export_writers import export_stream
from analysis.exports import (
    CONTENT_TYPES,
    FORMATS,
    HISTORY,
    export_filename,
    export_filter_build,
)
from analysis.library import DECISIONS, library_search
from analysis.pagination import HISTORY_PAGE_PARAMETERS, HistoryPageQuery
from analysis.selectors import latest_run, latest_snapshot, results_history_page, snapshot_json
from analysis.services import analysis_enqueue
from core.errors import DomainError
from experiments.apis import project_for
from experiments.auth import ApiKeyAuthentication, UserTokenAuthentication
from experiments.models import ApiKey, Experiment, Project
from experiments.selectors import experiment_get


def readable_project(request: Request, slug: str, permission: str = "read") -> Project:
    """A person with the permission, or an API key of this project with the read scope (which
    covers reading results and exports alike)."""
    if isinstance(request.auth, ApiKey):
        if request.auth.project.slug != slug:
            raise NotFound("No such project.")
        if "read" not in request.auth.scopes:
            raise PermissionDenied("This API key lacks the 'read' scope.")
        return request.auth.project
    return project_for(request, slug, permission)


class ResultsAuthMixin:
    authentication_classes = [SessionAuthentication, UserTokenAuthentication, ApiKeyAuthentication]


class ResultsApi(ResultsAuthMixin, APIView):
    @extend_schema(responses={200: ResultsSchema})
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment = experiment_get(readable_project(request, project), key)
        snapshot = latest_snapshot(experiment)
        run = latest_run(experiment)
        run_json = (
            {"id": run.pk, "status": run.status, "error": run.error, "created_at": run.created_at}
            if run
            else None
        )
        if snapshot is None:
            return Response(
                {
                    "experiment": experiment.key,
                    "computed_at": None,
                    "metrics": [],
                    "health": {},
                    "recommendation": None,
                    "last_run": run_json,
                }
            )
        data = snapshot_json(snapshot)
        data["last_run"] = run_json
        return Response(data)


class ResultsHistoryApi(ResultsAuthMixin, APIView):
    @extend_schema(parameters=HISTORY_PAGE_PARAMETERS, responses={200: ResultsHistorySchema})
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment = experiment_get(readable_project(request, project), key)
        query = HistoryPageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = results_history_page(experiment, **query.validated_data)
        return Response({"experiment": key, **page})


class BreakdownTimeout(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "breakdown_too_slow"


class BreakdownQuery(serializers.Serializer):
    # dimension is checked by the service (one message for the page, the API and the CLI).
    dimension = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    levels = serializers.IntegerField(
        required=False,
        default=BREAKDOWN_LEVELS,
        min_value=1,
        max_value=MAX_BREAKDOWN_LEVELS,
        help_text="values kept as levels of their own, the most common; the rest are '(other)'",
    )


class ResultsBreakdownApi(ResultsAuthMixin, APIView):
    """GET .../results/breakdown?dimension=<attribute>: the results per level of a unit
    attribute sent with exposures, computed at the latest snapshot's cut-off."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "dimension",
                OpenApiTypes.STR,
                required=True,
                description='a unit attribute sent with exposures ("attributes"), e.g. country',
            ),
            OpenApiParameter(
                "levels",
                OpenApiTypes.INT,
                default=BREAKDOWN_LEVELS,
                description=f"values kept as levels (1 to {MAX_BREAKDOWN_LEVELS}); the rest are "
                "'(other)'",
            ),
        ],
        responses={200: BreakdownSchema},
    )
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment = experiment_get(readable_project(request, project), key)
        query = BreakdownQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            data = experiment_breakdown(
                experiment,
                query.validated_data.get("dimension"),
                levels=query.validated_data["levels"],
            )
        except BreakdownTooSlow as exc:
            raise BreakdownTimeout({"detail": str(exc), "field": "dimension"}) from exc
        return Response(data)


class AnalyzeApi(APIView):
    @extend_schema(request=None, responses={202: AnalyzeQueuedSchema})
    def post(self, request: Request, project: str, key: str) -> Response:
        experiment: Experiment = experiment_get(project_for(request, project, "read"), key)
        with transaction.atomic():
            run_id = analysis_enqueue(experiment, "api")
        return Response({"run_id": run_id, "status": "queued"}, status=status.HTTP_202_ACCEPTED)


# --- exports ------------------------------------------------------------------------------------


class _JsonErrors(BaseContentNegotiation):
    """`format=` names the export's file format here, not a renderer: errors are always JSON."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=FORMATS,
        default="csv",
        error_messages={
            "invalid_choice": f"'{{input}}' is not an export format; use one of "
            f"{', '.join(FORMATS)}."
        },
    )
    since = serializers.CharField(required=False, allow_blank=True)
    until = serializers.CharField(required=False, allow_blank=True)
    latest = serializers.BooleanField(default=False)
    history = serializers.ChoiceField(
        choices=HISTORY,
        default="all",
        error_messages={
            "invalid_choice": f"'{{input}}' is not a history; use one of {', '.join(HISTORY)}."
        },
    )


EXPORT_RESPONSES = {
    (200, "text/csv"): OpenApiTypes.STR,
    (200, "application/json"): OpenApiTypes.OBJECT,
    (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
    (400, "application/json"): OpenApiTypes.OBJECT,
    (403, "application/json"): OpenApiTypes.OBJECT,
    (404, "application/json"): OpenApiTypes.OBJECT,
}
EXPORT_PARAMETERS = [
    OpenApiParameter("format", OpenApiTypes.STR, enum=list(FORMATS), default="csv"),
    OpenApiParameter(
        "since",
        OpenApiTypes.STR,
        description="snapshots whose data cut-off is at or after (date or ISO time)",
    ),
    OpenApiParameter(
        "until",
        OpenApiTypes.STR,
        description="snapshots whose data cut-off is before (a date includes it)",
    ),
    OpenApiParameter("latest", OpenApiTypes.BOOL, description="only each experiment's latest"),
    OpenApiParameter(
        "history",
        OpenApiTypes.STR,
        enum=list(HISTORY),
        default="all",
        description="looks: only the snapshots that were a counted look or the final analysis",
    ),
]


class ExportApiBase(ResultsAuthMixin, APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonErrors

    def stream(self, request: Request, project: Project, experiments: list[str]) -> Any:
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        flt = export_filter_build(
            project=project,
            experiments=experiments,
            statuses=request.query_params.getlist("status"),
            since=q.get("since"),
            until=q.get("until"),
            latest_only=q["latest"],
            history=q["history"],
        )
        fmt = q["format"]
        response = StreamingHttpResponse(export_stream(flt, fmt), content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{export_filename(flt, fmt)}"'
        response["Cache-Control"] = "no-store"
        return response


class ExperimentExportApi(ExportApiBase):
    @extend_schema(
        parameters=[
            *EXPORT_PARAMETERS,
            OpenApiParameter(
                "dimension",
                OpenApiTypes.STR,
                description="export the breakdown by this exposure attribute instead: one row "
                "per (level, metric, treatment arm) at the latest snapshot's cut-off (since, "
                "until, latest and history do not apply)",
            ),
            OpenApiParameter("levels", OpenApiTypes.INT, description="with dimension"),
        ],
        responses=EXPORT_RESPONSES,
        description="One row per (snapshot, metric, variant) of this experiment; "
        "columns in docs/exports.md. Needs the export permission or an API key's read scope.",
    )
    def get(self, request: Request, project: str, key: str) -> Any:
        proj = readable_project(request, project, "export")
        experiment = experiment_get(proj, key)
        if "dimension" in request.query_params:
            return self.breakdown(request, experiment)
        return self.stream(request, proj, [experiment.key])

    def breakdown(self, request: Request, experiment: Experiment) -> Any:
        """The breakdown export (analysis.breakdown_exports), in the asked format."""
        for name in ("since", "until", "latest", "history"):
            if name in request.query_params:
                raise DomainError(
                    f"'{name}' does not apply to a breakdown export (dimension): it is computed "
                    "at the latest snapshot's cut-off.",
                    field=name,
                )
        query = BreakdownQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = ExportQuerySerializer(data={"format": request.query_params.get("format", "csv")})
        fmt.is_valid(raise_exception=True)
        dimension, fmt = query.validated_data.get("dimension"), fmt.validated_data["format"]
        try:
            stream = breakdown_export_stream(
                experiment, dimension, fmt, levels=query.validated_data["levels"]
            )
        except BreakdownTooSlow as exc:
            raise BreakdownTimeout({"detail": str(exc), "field": "dimension"}) from exc
        response = StreamingHttpResponse(stream, content_type=CONTENT_TYPES[fmt])
        filename = breakdown_export_filename(experiment, dimension, fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response


class ProjectExportApi(ExportApiBase):
    @extend_schema(
        parameters=[
            *EXPORT_PARAMETERS,
            OpenApiParameter("experiment", OpenApiTypes.STR, description="keys, comma-separated"),
            OpenApiParameter("status", OpenApiTypes.STR, description="statuses, comma-separated"),
        ],
        responses=EXPORT_RESPONSES,
        description="One row per (experiment, snapshot, metric, variant) across the project.",
    )
    def get(self, request: Request, project: str) -> Any:
        proj = readable_project(request, project, "export")
        if "dimension" in request.query_params:
            raise DomainError(
                "A breakdown export is one experiment's: use "
                f"/api/v1/projects/{proj.slug}/experiments/<key>/export?dimension=...",
                field="dimension",
            )
        return self.stream(request, proj, request.query_params.getlist("experiment"))


# --- the library of decided experiments ---------------------------------------------------------


class LibraryLiftSerializer(serializers.Serializer):
    metric = serializers.CharField()
    variant = serializers.CharField()
    lift_rel = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    significant = serializers.BooleanField()
    status = serializers.CharField()


class LibraryApi(ResultsAuthMixin, APIView):
    """GET .../library/?q=&tag=&decision=: concluded and rolled-back experiments with their
    decision, rationale, tags and the primary lifts of their last snapshot (stored rows)."""

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
        tag = serializers.CharField(required=False, allow_blank=True, max_length=50, default="")
        decision = serializers.ChoiceField(
            choices=[("", "any"), *DECISIONS.items()], required=False, default=""
        )

    class OutputSerializer(serializers.Serializer):
        key = serializers.CharField()
        name = serializers.CharField()
        hypothesis = serializers.CharField()
        decision = serializers.ChoiceField(choices=list(DECISIONS.items()))
        decision_variant = serializers.CharField()
        rationale = serializers.CharField()
        tags = serializers.ListField(child=serializers.CharField())
        ended_at = serializers.DateTimeField(allow_null=True)
        recommendation = serializers.CharField(help_text="of the last snapshot; empty if none")
        lifts = LibraryLiftSerializer(many=True, help_text="primary metrics, treatment arms")

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="text in name, key, hypothesis, rationale"),
            OpenApiParameter("tag", str, description="one tag (exact, case-insensitive)"),
            OpenApiParameter("decision", str, enum=list(DECISIONS)),
        ],
        responses={200: OutputSerializer(many=True)},
    )
    def get(self, request: Request, project: str) -> Response:
        proj = readable_project(request, project)
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entries = library_search(
            proj,
            q=query.validated_data["q"].strip(),
            tag=query.validated_data["tag"].strip(),
            decision=query.validated_data["decision"],
        )
        return Response(self.OutputSerializer(entries, many=True).data)
