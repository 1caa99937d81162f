"""Results API: latest snapshot, history, and queueing an analysis run."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analysis.selectors import latest_run, latest_snapshot, snapshot_json, snapshots_for
from analysis.services import analysis_enqueue
from experiments.apis import project_for
from experiments.auth import ApiKeyAuthentication
from experiments.models import ApiKey, Experiment, Project
from experiments.selectors import experiment_get


def readable_project(request: Request, slug: str, permission: str = "read") -> Project:
    """A person with the permission, or an API key of this project with the read scope."""
    if isinstance(request.auth, ApiKey):
        if request.auth.project.slug != slug:
            raise NotFound("No such project.")
        if "read" not in request.auth.scopes:
            raise PermissionDenied("This API key lacks the 'read' scope.")
        return request.auth.project
    return project_for(request, slug, permission)


class ResultsAuthMixin:
    authentication_classes = [SessionAuthentication, TokenAuthentication, ApiKeyAuthentication]


class ResultsApi(ResultsAuthMixin, APIView):
    @extend_schema(responses={200: dict})
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
    @extend_schema(responses={200: dict})
    def get(self, request: Request, project: str, key: str) -> Response:
        experiment = experiment_get(readable_project(request, project), key)
        snapshots = snapshots_for(experiment).order_by("computed_at", "id")
        return Response({"experiment": key, "snapshots": [snapshot_json(s) for s in snapshots]})


class AnalyzeApi(APIView):
    @extend_schema(request=None, responses={202: dict})
    def post(self, request: Request, project: str, key: str) -> Response:
        experiment: Experiment = experiment_get(project_for(request, project, "read"), key)
        with transaction.atomic():
            run_id = analysis_enqueue(experiment, "api")
        return Response({"run_id": run_id, "status": "queued"}, status=status.HTTP_202_ACCEPTED)
