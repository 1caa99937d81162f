"""A project's environments, segments and change requests."""

from django.templatetags.static import static
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.apis.access import project_for
from experiments.models import Environment
from experiments.services import environment_browser_key_rotate, environment_browser_update
from flags import services
from flags.apis.serializers import (
    ChangeRequestSerializer,
    EnvironmentSerializer,
    ReviewInput,
    SegmentSerializer,
)
from flags.models import ChangeRequestStatus
from flags.selectors import (
    change_request_get,
    change_requests_for_project,
    environment_get,
    environments_for_project,
    flag_get,
    segment_get,
    segment_usage,
)


class EnvironmentListApi(APIView):
    @extend_schema(responses=EnvironmentSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        return Response(EnvironmentSerializer(environments_for_project(proj), many=True).data)

    @extend_schema(request=EnvironmentSerializer, responses={201: EnvironmentSerializer})
    def post(self, request: Request, project: str) -> Response:
        """A new environment with its own client key (admins)."""
        proj = project_for(request, project, "manage")
        serializer = EnvironmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = services.environment_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(EnvironmentSerializer(environment).data, status=status.HTTP_201_CREATED)


class BrowserIngestionInput(serializers.Serializer):
    enabled = serializers.BooleanField(
        required=False,
        help_text="true: give the environment a browser key (if it has none); false: remove "
        "it (pages using it are refused at once)",
    )
    origins = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="origins (scheme://host[:port]) whose pages may post with the key",
    )


class BrowserIngestionSerializer(serializers.Serializer):
    environment = serializers.CharField(help_text="the environment's key")
    enabled = serializers.BooleanField()
    key = serializers.CharField(
        allow_null=True, help_text="the public browser key (web-...); null while off"
    )
    origins = serializers.ListField(child=serializers.CharField())
    endpoint = serializers.CharField(
        help_text="where pages post events (POST, text/plain or application/json)"
    )
    script = serializers.CharField(help_text="the beacon script abacus serves")


def browser_ingestion(environment: Environment) -> dict:
    key = environment.browser_key
    return {
        "environment": environment.key,
        "enabled": key is not None,
        "key": key,
        "origins": list(environment.browser_origins),
        "endpoint": f"/api/v1/events/beacon?key={key}" if key else "/api/v1/events/beacon",
        "script": static("abacus/beacon.js"),
    }


class EnvironmentBrowserApi(APIView):
    """Events from browsers in one environment: its public browser key and allowed origins.
    Members read (the key is public: pages carry it); admins change them."""

    @extend_schema(responses=BrowserIngestionSerializer)
    def get(self, request: Request, project: str, environment: str) -> Response:
        proj = project_for(request, project)
        return Response(browser_ingestion(environment_get(proj, environment)))

    @extend_schema(request=BrowserIngestionInput, responses=BrowserIngestionSerializer)
    def patch(self, request: Request, project: str, environment: str) -> Response:
        proj = project_for(request, project, "manage")
        found = environment_get(proj, environment)
        serializer = BrowserIngestionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = environment_browser_update(
            environment=found, actor=request.user, **serializer.validated_data
        )
        return Response(browser_ingestion(updated))


class EnvironmentBrowserRotateApi(APIView):
    """A new browser key (admins); the old one is refused from the next request on."""

    @extend_schema(request=None, responses=BrowserIngestionSerializer)
    def post(self, request: Request, project: str, environment: str) -> Response:
        proj = project_for(request, project, "manage")
        rotated = environment_browser_key_rotate(
            environment=environment_get(proj, environment), actor=request.user
        )
        return Response(browser_ingestion(rotated))


class SegmentListApi(APIView):
    @extend_schema(responses=SegmentSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        context = {"usage": segment_usage(proj)}
        segments = proj.segments.all()
        return Response(SegmentSerializer(segments, many=True, context=context).data)

    @extend_schema(request=SegmentSerializer, responses={201: SegmentSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "edit")
        serializer = SegmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        segment = services.segment_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        context = {"usage": segment_usage(proj)}
        return Response(
            SegmentSerializer(segment, context=context).data, status=status.HTTP_201_CREATED
        )


class SegmentDetailApi(APIView):
    @extend_schema(responses=SegmentSerializer)
    def get(self, request: Request, project: str, segment: str) -> Response:
        proj = project_for(request, project)
        context = {"usage": segment_usage(proj)}
        return Response(SegmentSerializer(segment_get(proj, segment), context=context).data)

    @extend_schema(request=SegmentSerializer, responses=SegmentSerializer)
    def patch(self, request: Request, project: str, segment: str) -> Response:
        proj = project_for(request, project, "edit")
        found = segment_get(proj, segment)
        serializer = SegmentSerializer(found, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        updated = services.segment_update(
            segment=found, actor=request.user, **serializer.validated_data
        )
        context = {"usage": segment_usage(proj)}
        return Response(SegmentSerializer(updated, context=context).data)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, segment: str) -> Response:
        """Refused (400) while a flag rule or an experiment uses it."""
        proj = project_for(request, project, "edit")
        services.segment_delete(segment=segment_get(proj, segment), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ChangeRequestListApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=ChangeRequestStatus.values)],
        responses=ChangeRequestSerializer(many=True),
    )
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        wanted = request.query_params.get("status", "").strip()
        if wanted and wanted not in ChangeRequestStatus.values:
            wanted = "-"  # matches nothing
        requests = change_requests_for_project(proj, wanted or None)[:200]
        return Response(ChangeRequestSerializer(requests, many=True).data)

    @extend_schema(request=ChangeRequestSerializer, responses={201: ChangeRequestSerializer})
    def post(self, request: Request, project: str) -> Response:
        """Ask for a production change explicitly: {"flag", "environment", "change", "comment"}."""
        proj = project_for(request, project, "edit")
        serializer = ChangeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        made = services.change_request_create(
            flag=flag_get(proj, data["flag"]["key"]),
            environment=environment_get(proj, data["environment"]["key"]),
            change=dict(data["change"]),
            comment=data.get("comment", ""),
            actor=request.user,
        )
        return Response(ChangeRequestSerializer(made).data, status=status.HTTP_201_CREATED)


class ChangeRequestActionApi(APIView):
    """POST .../change-requests/<id>/<approve|reject|cancel>."""

    @extend_schema(
        operation_id="projects_change_requests_action",
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=["approve", "reject", "cancel"]
            )
        ],
        request=ReviewInput,
        responses=ChangeRequestSerializer,
    )
    def post(self, request: Request, project: str, request_id: int, action: str) -> Response:
        proj = project_for(request, project, "edit")
        found = change_request_get(proj, request_id)
        serializer = ReviewInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        if action == "cancel":
            done = services.change_request_cancel(change_request=found, actor=request.user)
        else:
            done = services.change_request_review(
                change_request=found,
                actor=request.user,
                approve=action == "approve",
                comment=serializer.validated_data["comment"],
            )
        return Response(ChangeRequestSerializer(done).data)
