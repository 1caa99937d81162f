"""Projects, their settings and webhook secret, members and API keys."""

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import DomainError
from core.signing import SIGNATURE_HEADER, WEBHOOK_EVENT_HELP
from experiments import services
from experiments.apis.access import project_for
from experiments.models import ApiKey, ApiKeyScope, Membership, Project, Role
from experiments.selectors import members_for_project, projects_for_user, role_of


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
        if not services.project_creation_allowed(request.user):
            raise PermissionDenied(services.PROJECT_CREATION_REFUSED)
        serializer = ProjectSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        project = services.project_create(actor=request.user, **serializer.validated_data)
        return Response(
            ProjectSerializer(project, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class ProjectSettingsSerializer(serializers.Serializer):
    slug = serializers.SlugField(read_only=True)
    name = serializers.CharField(max_length=200, required=False)
    webhook_url = serializers.URLField(max_length=200, required=False, allow_blank=True)
    # Shape only: the range is the service's rule (experiments.services.event_retention_check).
    event_retention_days = serializers.IntegerField(required=False, allow_null=True)
    webhook_events = serializers.SerializerMethodField()

    def get_webhook_events(self, project: Project) -> list[str]:
        return [name for name, _ in WEBHOOK_EVENT_HELP]


class ProjectSettingsApi(APIView):
    """A project's settings (name, webhook URL, event retention): admins only, like the
    settings page."""

    @extend_schema(responses=ProjectSettingsSerializer)
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        return Response(ProjectSettingsSerializer(proj).data)

    @extend_schema(request=ProjectSettingsSerializer, responses=ProjectSettingsSerializer)
    def patch(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = ProjectSettingsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            services.project_update(project=proj, actor=request.user, **serializer.validated_data)
        except DomainError as exc:
            raise serializers.ValidationError({exc.field or "detail": [exc.message]}) from exc
        return Response(ProjectSettingsSerializer(proj).data)


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField()
    signature_header = serializers.CharField()
    algorithm = serializers.CharField()


class WebhookSecretApi(APIView):
    """Reveal (audited) or rotate the project's webhook signing secret: admins only."""

    @extend_schema(
        request=None,
        responses=WebhookSecretSerializer,
        operation_id="projects_webhook_secret_action",
    )
    def post(self, request: Request, project: str, action: str) -> Response:
        proj = project_for(request, project, "manage")
        if action == "rotate":
            secret = services.project_webhook_secret_rotate(project=proj, actor=request.user)
        else:
            secret = services.project_webhook_secret_reveal(project=proj, actor=request.user)
        body = {"webhook_secret": secret, "signature_header": SIGNATURE_HEADER}
        body["algorithm"] = "HMAC-SHA256 of the raw request body, hex, prefixed 'sha256='"
        return Response(body, headers={"Cache-Control": "no-store"})


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)
    # Only to create the person's login when no user has that name yet; never returned.
    password = serializers.CharField(write_only=True, required=False, allow_blank=True)
    email = serializers.EmailField(write_only=True, required=False, allow_blank=True)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberListApi(APIView):
    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        rows = members_for_project(proj)
        return Response([{"username": m.user.get_username(), "role": m.role} for m in rows])

    @extend_schema(request=MemberSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_add(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(
            {"username": membership.user.get_username(), "role": membership.role},
            status=status.HTTP_201_CREATED,
        )


class MemberDetailApi(APIView):
    def _user(self, proj: Project, username: str) -> Any:
        membership = get_object_or_404(Membership, project=proj, user__username=username)
        return membership.user

    @extend_schema(request=MemberRoleSerializer, responses=MemberSerializer)
    def patch(self, request: Request, project: str, username: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_set(
            project=proj,
            user=self._user(proj, username),
            role=serializer.validated_data["role"],
            actor=request.user,
        )
        return Response({"username": username, "role": membership.role})

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, username: str) -> Response:
        proj = project_for(request, project, "manage")
        services.membership_remove(
            project=proj, user=self._user(proj, username), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeySerializer(serializers.ModelSerializer):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKeyScope.choices))
    environment = serializers.SlugField(
        required=False,
        max_length=64,
        help_text="The environment key the key belongs to (default production).",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "environment",
            "scopes",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]

    def to_representation(self, instance: ApiKey) -> dict:
        data = super().to_representation(instance)
        data["environment"] = instance.environment.key if instance.environment else "production"
        return data


class ApiKeyListApi(APIView):
    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        keys = proj.api_keys.select_related("environment").order_by("-created_at")
        return Response(ApiKeySerializer(keys, many=True).data)

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
