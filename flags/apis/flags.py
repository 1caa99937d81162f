"""Flags by key with their environments nested, the toggle (kill switch) and schedules."""

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import DomainError
from experiments.apis.access import project_for
from experiments.models import Project
from flags import services
from flags.apis.serializers import (
    ChangeRequestSerializer,
    EnvironmentConfigSerializer,
    FlagSerializer,
    ScheduledChangeSerializer,
    ToggleInput,
)
from flags.models import ChangeRequest, Flag
from flags.selectors import (
    environment_get,
    flag_get,
    flag_list,
    scheduled_change_get,
    scheduled_changes_for_flag,
)

ARCHIVED = {"": False, "false": False, "0": False, "true": True, "1": True, "all": None}
ACCEPTED = OpenApiResponse(
    ChangeRequestSerializer,
    description="a production change of a project that requires approval: the change request",
)


def _owner(project: Project, data: dict[str, Any]) -> None:
    if "owner" not in data:
        return
    username = data["owner"]
    if username in (None, ""):
        data["owner"] = None
        return
    user = get_user_model().objects.filter(username=username, memberships__project=project)
    data["owner"] = user.first()
    if data["owner"] is None:
        raise DomainError(
            f"The owner must be a member of this project ({username} is not).", "owner"
        )


def _environments(
    flag: Flag, request: Request, environments: dict[str, dict[str, Any]]
) -> ChangeRequest | None:
    """Apply each environment's part; the change request of production, if one was made."""
    made = None
    for key, change in environments.items():
        environment = flag.project.environments.filter(key=key).first()
        if environment is None:
            raise DomainError(f"The project has no environment {key!r}.", f"environments.{key}")
        try:
            result = services.flag_environment_update(
                flag=flag, environment=environment, actor=request.user, **change
            )
        except DomainError as exc:
            raise DomainError(exc.message, f"environments.{key}.{exc.field}") from exc
        if isinstance(result, ChangeRequest):
            made = result
    return made


def _answer(project: Project, key: str, made: ChangeRequest | None, code: int) -> Response:
    if made is not None:
        return Response(ChangeRequestSerializer(made).data, status=status.HTTP_202_ACCEPTED)
    return Response(FlagSerializer(flag_get(project, key)).data, status=code)


class FlagListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="text in the key, name or description"),
            OpenApiParameter("tag", str),
            OpenApiParameter("owner", str, description="username of the owner"),
            OpenApiParameter(
                "archived", str, enum=["false", "true", "all"], description="default false"
            ),
        ],
        responses=FlagSerializer(many=True),
    )
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        archived = request.query_params.get("archived", "").strip().lower()
        if archived not in ARCHIVED:
            raise DomainError("archived is true, false or all.", "archived")
        flags = flag_list(
            proj,
            q=request.query_params.get("q", "").strip(),
            tag=request.query_params.get("tag", "").strip(),
            owner=request.query_params.get("owner", "").strip(),
            archived=ARCHIVED[archived],
        )
        return Response(FlagSerializer(flags, many=True).data)

    @extend_schema(request=FlagSerializer, responses={201: FlagSerializer, 202: ACCEPTED})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "edit")
        serializer = FlagSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        environments = data.pop("environments", {})
        _owner(proj, data)
        data.pop("archived", None)
        with transaction.atomic():
            flag = services.flag_create(project=proj, actor=request.user, **data)
            made = _environments(flag, request, environments)
        return _answer(proj, flag.key, made, status.HTTP_201_CREATED)


class FlagDetailApi(APIView):
    @extend_schema(responses=FlagSerializer)
    def get(self, request: Request, project: str, flag: str) -> Response:
        proj = project_for(request, project)
        return Response(FlagSerializer(flag_get(proj, flag)).data)

    @extend_schema(request=FlagSerializer, responses={200: FlagSerializer, 202: ACCEPTED})
    def patch(self, request: Request, project: str, flag: str) -> Response:
        """Definition fields and ``environments.<E>`` parts; a production part of a project
        that requires approval becomes a change request (202, the rest applied)."""
        proj = project_for(request, project, "edit")
        found = flag_get(proj, flag)
        serializer = FlagSerializer(found, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        environments = data.pop("environments", {})
        data.pop("default_variation", None)
        _owner(proj, data)
        with transaction.atomic():
            if data:
                found = services.flag_update(flag=found, actor=request.user, **data)
            made = _environments(found, request, environments)
        return _answer(proj, flag, made, status.HTTP_200_OK)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, flag: str) -> Response:
        proj = project_for(request, project, "edit")
        services.flag_delete(flag=flag_get(proj, flag), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class FlagToggleApi(APIView):
    """POST .../flags/F/environments/E/toggle {"enabled": false}: the kill switch."""

    @extend_schema(request=ToggleInput, responses={200: EnvironmentConfigSerializer, 202: ACCEPTED})
    def post(self, request: Request, project: str, flag: str, environment: str) -> Response:
        proj = project_for(request, project, "edit")
        found = flag_get(proj, flag)
        env = environment_get(proj, environment)
        serializer = ToggleInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.flag_toggle(
            flag=found, environment=env, actor=request.user, **serializer.validated_data
        )
        if isinstance(result, ChangeRequest):
            return Response(ChangeRequestSerializer(result).data, status=status.HTTP_202_ACCEPTED)
        return Response(EnvironmentConfigSerializer(result).data)


class ScheduleListApi(APIView):
    @extend_schema(responses=ScheduledChangeSerializer(many=True))
    def get(self, request: Request, project: str, flag: str) -> Response:
        proj = project_for(request, project)
        schedules = scheduled_changes_for_flag(flag_get(proj, flag))
        return Response(ScheduledChangeSerializer(schedules, many=True).data)

    @extend_schema(request=ScheduledChangeSerializer, responses={201: ScheduledChangeSerializer})
    def post(self, request: Request, project: str, flag: str) -> Response:
        proj = project_for(request, project, "edit")
        found = flag_get(proj, flag)
        serializer = ScheduledChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        environment = environment_get(proj, data.pop("environment")["key"])
        scheduled = services.scheduled_change_create(
            flag=found, environment=environment, actor=request.user, **data
        )
        return Response(ScheduledChangeSerializer(scheduled).data, status=status.HTTP_201_CREATED)


class ScheduleDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, flag: str, schedule_id: int) -> Response:
        """Cancel a pending scheduled change."""
        proj = project_for(request, project, "edit")
        scheduled = scheduled_change_get(flag_get(proj, flag), schedule_id)
        services.scheduled_change_cancel(scheduled_change=scheduled, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
