"""The project holdout: list, create, read, edit, delete (drafts), start and end.

Members read; editors create and edit; starting and ending change what production serves to a
share of every unit, so they need an admin. The comparison's results are in analysis/apis.py.
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.apis.access import project_for
from experiments.holdouts import holdout_get, holdouts_for_project
from experiments.models import Holdout
from experiments.services.holdouts import (
    HOLDOUT_MAX_SHARE,
    SEED_MAX_LENGTH,
    holdout_create,
    holdout_delete,
    holdout_end,
    holdout_start,
    holdout_update,
)

HOLDOUT_ACTIONS = {"start": holdout_start, "end": holdout_end}


class HoldoutSerializer(serializers.ModelSerializer):
    share = serializers.FloatField(
        min_value=0,
        max_value=HOLDOUT_MAX_SHARE,
        help_text="The share of units held out, more than 0 and at most 0.2 (0.05 is 5%).",
    )
    seed = serializers.CharField(
        max_length=SEED_MAX_LENGTH,
        required=False,
        help_text="The holdout's own hash seed (random when left out); frozen once started.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    status = serializers.CharField(read_only=True, help_text="draft, running or ended")

    class Meta:
        model = Holdout
        fields = [
            "id",
            "name",
            "description",
            "share",
            "seed",
            "status",
            "enabled",
            "started_at",
            "ended_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "enabled", "started_at", "ended_at", "created_at", "updated_at"]


class HoldoutListApi(APIView):
    """GET/POST .../holdouts/: the project's holdouts, newest first; a new one is a draft."""

    @extend_schema(responses=HoldoutSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        return Response(HoldoutSerializer(holdouts_for_project(proj), many=True).data)

    @extend_schema(request=HoldoutSerializer, responses={201: HoldoutSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "edit")
        serializer = HoldoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        holdout = holdout_create(project=proj, actor=request.user, **serializer.validated_data)
        return Response(HoldoutSerializer(holdout).data, status=status.HTTP_201_CREATED)


class HoldoutDetailApi(APIView):
    """GET/PATCH/DELETE .../holdouts/<id>/."""

    @extend_schema(responses=HoldoutSerializer)
    def get(self, request: Request, project: str, holdout_id: int) -> Response:
        proj = project_for(request, project)
        return Response(HoldoutSerializer(holdout_get(proj, holdout_id)).data)

    @extend_schema(request=HoldoutSerializer, responses=HoldoutSerializer)
    def patch(self, request: Request, project: str, holdout_id: int) -> Response:
        proj = project_for(request, project, "edit")
        holdout = holdout_get(proj, holdout_id)
        serializer = HoldoutSerializer(holdout, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        holdout = holdout_update(holdout=holdout, actor=request.user, **serializer.validated_data)
        return Response(HoldoutSerializer(holdout).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, holdout_id: int) -> Response:
        proj = project_for(request, project, "edit")
        holdout_delete(holdout=holdout_get(proj, holdout_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HoldoutActionApi(APIView):
    """POST .../holdouts/<id>/start|end (admins): start holding units out, or stop."""

    @extend_schema(
        operation_id="projects_holdouts_action",
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=list(HOLDOUT_ACTIONS), description="what"
            )
        ],
        request=None,
        responses=HoldoutSerializer,
    )
    def post(self, request: Request, project: str, holdout_id: int, action: str) -> Response:
        proj = project_for(request, project, "manage")
        holdout = HOLDOUT_ACTIONS[action](holdout=holdout_get(proj, holdout_id), actor=request.user)
        return Response(HoldoutSerializer(holdout).data)
