"""REST API: a project's notification channels (admins write, members read) and each person's
own email preferences."""

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.apis.access import project_for
from experiments.selectors import user_can
from notifications import services
from notifications.models import EVENTS, ChannelKind, NotificationChannel
from notifications.selectors import (
    channel_get,
    channel_target_shown,
    channels_for_project,
    preference_for,
)


@extend_schema_field(
    {
        "type": "string",
        "pattern": f"^({'|'.join(ChannelKind.values)})$",
        "description": "`slack` (a Slack-compatible incoming webhook) or `email`.",
    }
)
class ChannelKindField(serializers.ChoiceField):
    """``slack`` or ``email``. Described by a pattern, not an enum: drf-spectacular names enums
    by field name, and a second ``kind`` enum would rename the metrics' one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=ChannelKind.choices, **kwargs)


class NotificationChannelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = ChannelKindField()
    name = serializers.CharField()
    target = serializers.CharField(help_text="Shown whole to admins; a Slack URL is masked.")
    events = serializers.ListField(child=serializers.CharField(), help_text="Empty: every event.")
    enabled = serializers.BooleanField()
    created_at = serializers.DateTimeField()


def _channel_out(channel: NotificationChannel, *, full: bool) -> dict[str, Any]:
    return {
        "id": channel.pk,
        "kind": channel.kind,
        "name": channel.name,
        "target": channel_target_shown(channel, full=full),
        "events": channel.events,
        "enabled": channel.enabled,
        "created_at": serializers.DateTimeField().to_representation(channel.created_at),
    }


class ChannelListApi(APIView):
    """``GET``: the project's channels (members). ``POST``: add one (admins)."""

    class NotificationChannelCreateSerializer(serializers.Serializer):
        kind = ChannelKindField()
        name = serializers.CharField(max_length=100)
        target = serializers.CharField(
            max_length=1000,
            help_text="A Slack-compatible incoming-webhook URL, or comma-separated emails.",
        )
        events = serializers.ListField(
            child=serializers.CharField(max_length=64),
            required=False,
            help_text=f"Empty or omitted: every event. Known: {', '.join(EVENTS)}.",
        )
        enabled = serializers.BooleanField(required=False, default=True)

    @extend_schema(responses=NotificationChannelSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        full = user_can(request.user, proj, "manage")
        return Response([_channel_out(c, full=full) for c in channels_for_project(proj)])

    @extend_schema(
        request=NotificationChannelCreateSerializer, responses={201: NotificationChannelSerializer}
    )
    def post(self, request: Request, project: str) -> Response:
        proj = project_for(request, project, "manage")
        serializer = self.NotificationChannelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = services.notification_channel_create(
            project=proj, actor=request.user, **serializer.validated_data
        )
        return Response(_channel_out(channel, full=True), status=status.HTTP_201_CREATED)


class ChannelDetailApi(APIView):
    """One channel: read (members), change or remove (admins). The kind is fixed."""

    class NotificationChannelUpdateSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False)
        target = serializers.CharField(max_length=1000, required=False)
        events = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
        enabled = serializers.BooleanField(required=False)

    @extend_schema(responses=NotificationChannelSerializer)
    def get(self, request: Request, project: str, channel_id: int) -> Response:
        proj = project_for(request, project)
        full = user_can(request.user, proj, "manage")
        return Response(_channel_out(channel_get(proj, channel_id), full=full))

    @extend_schema(
        request=NotificationChannelUpdateSerializer, responses=NotificationChannelSerializer
    )
    def patch(self, request: Request, project: str, channel_id: int) -> Response:
        proj = project_for(request, project, "manage")
        channel = channel_get(proj, channel_id)
        if "kind" in request.data and request.data["kind"] != channel.kind:
            raise serializers.ValidationError(
                {"kind": ["The kind is fixed; remove the channel and add another."]}
            )
        serializer = self.NotificationChannelUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        channel = services.notification_channel_update(
            channel=channel, actor=request.user, **serializer.validated_data
        )
        return Response(_channel_out(channel, full=True))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project: str, channel_id: int) -> Response:
        proj = project_for(request, project, "manage")
        services.notification_channel_delete(
            channel=channel_get(proj, channel_id), actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class MyPreferenceApi(APIView):
    """The calling person's email notifications about this project: which events, on or off.
    Mail goes to the address of their account (``address``, read-only). Before the first
    ``PUT`` they receive nothing; a first ``PUT`` without ``events`` chooses every event."""

    class NotificationPreferenceInputSerializer(serializers.Serializer):
        events = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
        email = serializers.BooleanField(required=False)

    class NotificationPreferenceSerializer(serializers.Serializer):
        events = serializers.ListField(child=serializers.CharField())
        email = serializers.BooleanField()
        address = serializers.CharField()
        known_events = serializers.ListField(child=serializers.CharField())

    def _out(self, request: Request, proj: Any) -> dict[str, Any]:
        preference = preference_for(request.user, proj)
        return {
            "events": preference.events if preference else [],
            "email": preference.email if preference else False,
            "address": request.user.email,
            "known_events": list(EVENTS),
        }

    @extend_schema(responses=NotificationPreferenceSerializer)
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        return Response(self._out(request, proj))

    @extend_schema(
        request=NotificationPreferenceInputSerializer, responses=NotificationPreferenceSerializer
    )
    def put(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        serializer = self.NotificationPreferenceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.notification_preference_set(
            user=request.user, project=proj, **serializer.validated_data
        )
        return Response(self._out(request, proj))
