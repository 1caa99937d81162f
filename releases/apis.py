"""REST API of guarded releases (DESIGN section 11, docs/releases.md "REST API"): list and
create, one release with its transitions, its checks, and the moves (start, pause, resume,
advance, roll back).

Two kinds of callers: people (session or their token; the services check roles, production
needs an admin) and service keys with the ``release`` scope (the CI/CD gate, ``abacus-release``).
A key belongs to one environment and acts only on that environment's releases (403 otherwise);
it moves releases as no person (``actor`` None), named ``key:<name>`` in the transitions and the
audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.apis import project_for
from experiments.auth import ApiKeyAuthentication, UserTokenAuthentication
from experiments.models import PRODUCTION, ApiKey, ApiKeyScope, Environment, Project

from . import services
from .models import Release, ReleaseCheck, ReleaseStatus
from .selectors import (
    DEFAULT_LIST,
    MAX_CHECKS,
    MAX_LIST,
    api_release_checks,
    api_release_get,
    api_release_list,
    environment_for_release,
    flag_for_release,
    release_get,
    step_percent,
)

# -- who is calling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The project, and who acts: a person (``actor``) or a key (``actor`` None, its label and
    the one environment it may act in)."""

    project: Project
    actor: AbstractBaseUser | None
    actor_label: str | None = None
    key_environment: Environment | None = None

    def may_touch(self, environment: Environment) -> None:
        key_env = self.key_environment
        if key_env is not None and environment.pk != key_env.pk:
            raise PermissionDenied(
                f"This API key belongs to the {key_env.key} environment: it may act only on "
                f"releases there, not in {environment.key}."
            )


def caller_for(request: Request, slug: str, permission: str = "read") -> Caller:
    """A person with the permission in the project, or a ``release``-scoped key of it."""
    api_key = request.auth
    if isinstance(api_key, ApiKey):
        if api_key.project.slug != slug:
            raise NotFound("No such project.")
        if ApiKeyScope.RELEASE not in api_key.scopes:
            raise PermissionDenied("This API key lacks the 'release' scope.")
        environment = api_key.environment
        if environment is None:  # keys made before environments are production's
            environment = Environment.objects.get(project=api_key.project, key=PRODUCTION)
        return Caller(api_key.project, None, f"key:{api_key.name}", environment)
    return Caller(project_for(request, slug, permission), request.user)


class ReleaseAuthMixin:
    authentication_classes = [SessionAuthentication, UserTokenAuthentication, ApiKeyAuthentication]


# -- shapes -------------------------------------------------------------------------------------


class StepSerializer(serializers.Serializer):
    percent = serializers.FloatField(help_text="share of units served the new variation, (0, 100]")
    min_minutes = serializers.FloatField(help_text="the step runs at least this long")
    min_units = serializers.IntegerField(help_text="and until each side has this many units")


class ReleaseMetricSerializer(serializers.Serializer):
    metric = serializers.CharField(help_text="a metric key of the project's catalog")
    role = serializers.CharField(help_text="guardrail (default) | primary")
    non_inferiority_margin = serializers.FloatField(
        allow_null=True, required=False, help_text="tolerated relative harm, e.g. 0.02"
    )


class DecisionSerializer(serializers.Serializer):
    action = serializers.CharField(
        allow_null=True, help_text="advance | hold | rollback | complete | failed"
    )
    reasons = serializers.ListField(child=serializers.CharField())
    waits_for = serializers.ListField(child=serializers.CharField())
    at = serializers.CharField(allow_null=True, help_text="the data cut-off of the decision")


class TransitionSerializer(serializers.Serializer):
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    from_step = serializers.IntegerField(allow_null=True)
    to_step = serializers.IntegerField(allow_null=True)
    actor = serializers.CharField(
        source="actor_label", help_text="a username, key:<name>, or monitor"
    )
    reason = serializers.CharField()
    at = serializers.DateTimeField()


@extend_schema_field(StepSerializer(many=True))
class StepsField(serializers.JSONField):
    """Read as JSON: the service checks each step and names the field (``steps[1].percent``)."""


@extend_schema_field(ReleaseMetricSerializer(many=True))
class MetricsField(serializers.JSONField):
    """A list of ``{"metric", "role", "non_inferiority_margin"}`` (or metric keys)."""


class ReleaseSummarySerializer(serializers.Serializer):
    """A release as lists show it (the detail adds its transitions)."""

    id = serializers.IntegerField()
    flag = serializers.CharField(source="flag.key")
    environment = serializers.CharField(source="environment.key")
    kind = serializers.CharField(help_text="canary | blue_green")
    variation = serializers.CharField(help_text="the new variation")
    baseline_variation = serializers.CharField()
    steps = StepSerializer(many=True)
    metrics = ReleaseMetricSerializer(many=True, source="metrics.all")
    auto_rollback = serializers.BooleanField()
    alpha = serializers.FloatField()
    analysis_interval_seconds = serializers.IntegerField()
    status = serializers.CharField(help_text=" | ".join(ReleaseStatus.values))
    step = serializers.IntegerField(help_text="index into steps")
    percent = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    description = serializers.CharField()
    start_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    next_analysis_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    created_by = serializers.SerializerMethodField()

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_percent(self, release: Release) -> float | None:
        return step_percent(release)

    @extend_schema_field(DecisionSerializer)
    def get_decision(self, release: Release) -> dict[str, Any]:
        d = release.decision or {}
        return {
            "action": d.get("action"),
            "reasons": [str(r) for r in d.get("reasons") or []],
            "waits_for": [str(w) for w in d.get("waits_for") or []],
            "at": d.get("at"),
        }

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text="a username, or key:<name>")
    )
    def get_created_by(self, release: Release) -> str | None:
        if release.created_by is not None:
            return release.created_by.get_username()
        return getattr(release, "creator_label", None)


class ReleaseSerializer(ReleaseSummarySerializer):
    transitions = TransitionSerializer(many=True, source="transitions.all")


class CheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReleaseCheck
        fields = [
            "id", "step", "percent", "at", "units", "metrics", "action", "reasons", "waits_for",
            "elapsed_ms",
        ]  # fmt: skip


def _release_response(caller: Caller, release_id: int, code: int = status.HTTP_200_OK) -> Response:
    release = api_release_get(caller.project, release_id)
    return Response(ReleaseSerializer(release).data, status=code)


# -- the endpoints ------------------------------------------------------------------------------


class ReleaseListApi(ReleaseAuthMixin, APIView):
    """GET/POST .../releases/: the project's releases, newest first; create one."""

    class FilterSerializer(serializers.Serializer):
        environment = serializers.CharField(required=False, allow_blank=True, max_length=100)
        status = serializers.ChoiceField(
            choices=ReleaseStatus.values, required=False, allow_blank=True
        )
        flag = serializers.CharField(required=False, allow_blank=True, max_length=100)
        limit = serializers.IntegerField(min_value=1, max_value=MAX_LIST, default=DEFAULT_LIST)

    class InputSerializer(serializers.Serializer):
        flag = serializers.CharField(max_length=100, help_text="a flag key")
        environment = serializers.CharField(max_length=100, help_text="an environment key")
        variation = serializers.CharField(max_length=100, help_text="the new variation's key")
        baseline_variation = serializers.CharField(
            max_length=100,
            required=False,
            allow_null=True,
            allow_blank=True,
            help_text="default: what the environment serves now (its default variation)",
        )
        kind = serializers.CharField(
            max_length=16, required=False, help_text="canary (default) | blue_green"
        )
        steps = StepsField(
            required=False,
            allow_null=True,
            help_text="canary default: 1, 5, 25, 50, 100%; blue_green: one 100% step",
        )
        metrics = MetricsField(required=False, allow_null=True)
        auto_rollback = serializers.BooleanField(required=False, help_text="default true")
        alpha = serializers.FloatField(required=False, help_text="0.001 to 0.2, default 0.05")
        analysis_interval_seconds = serializers.IntegerField(required=False)
        start_at = serializers.DateTimeField(
            required=False, allow_null=True, help_text="a later start; now when omitted"
        )
        description = serializers.CharField(required=False, allow_blank=True, max_length=5000)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            unknown = sorted(set(self.initial_data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({unknown[0]: ["A release has no such field."]})
            return attrs

    @extend_schema(
        parameters=[
            OpenApiParameter("environment", str, description="an environment key"),
            OpenApiParameter("status", str, enum=ReleaseStatus.values),
            OpenApiParameter("flag", str, description="a flag key"),
            OpenApiParameter("limit", int, default=DEFAULT_LIST, description=f"at most {MAX_LIST}"),
        ],
        responses=ReleaseSummarySerializer(many=True),
    )
    def get(self, request: Request, project: str) -> Response:
        caller = caller_for(request, project)
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = dict(query.validated_data)
        if caller.key_environment is not None:
            wanted = filters.get("environment") or caller.key_environment.key
            if wanted != caller.key_environment.key:
                caller.may_touch(environment_for_release(caller.project, wanted))
            filters["environment"] = wanted
        releases = api_release_list(caller.project, **filters)
        return Response(ReleaseSummarySerializer(releases, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: ReleaseSerializer})
    def post(self, request: Request, project: str) -> Response:
        caller = caller_for(request, project, "edit")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        flag = flag_for_release(caller.project, data.pop("flag"))
        environment = environment_for_release(caller.project, data.pop("environment"))
        caller.may_touch(environment)
        release = services.release_create(
            project=caller.project,
            flag=flag,
            environment=environment,
            actor=caller.actor,
            actor_label=caller.actor_label,
            **data,
        )
        return _release_response(caller, release.pk, status.HTTP_201_CREATED)


class ReleaseDetailApi(ReleaseAuthMixin, APIView):
    @extend_schema(responses=ReleaseSerializer)
    def get(self, request: Request, project: str, release_id: int) -> Response:
        caller = caller_for(request, project)
        release = api_release_get(caller.project, release_id)
        caller.may_touch(release.environment)
        return Response(ReleaseSerializer(release).data)


class ReleaseChecksApi(ReleaseAuthMixin, APIView):
    """GET .../releases/<id>/checks/: the monitor's analyses, oldest first (the latest ones)."""

    class FilterSerializer(serializers.Serializer):
        since = serializers.DateTimeField(required=False)
        before = serializers.DateTimeField(required=False)
        limit = serializers.IntegerField(min_value=1, max_value=MAX_CHECKS, default=MAX_CHECKS)

    @extend_schema(
        parameters=[
            OpenApiParameter("since", str, description="ISO time: data through it or later"),
            OpenApiParameter("before", str, description="ISO time: checks with data before it"),
            OpenApiParameter(
                "limit", int, default=MAX_CHECKS, description=f"the latest, at most {MAX_CHECKS}"
            ),
        ],
        responses=CheckSerializer(many=True),
    )  # fmt: skip
    def get(self, request: Request, project: str, release_id: int) -> Response:
        caller = caller_for(request, project)
        release = release_get(caller.project, release_id)
        caller.may_touch(release.environment)
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        checks = api_release_checks(release, **query.validated_data)
        return Response(CheckSerializer(checks, many=True).data)


class ActionInput(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, help_text="why, for the transitions"
    )


ACTIONS = {
    "start": services.release_start,
    "pause": services.release_pause,
    "resume": services.release_resume,
    "advance": services.release_advance,
    "rollback": services.release_rollback,
}


class ReleaseActionApi(ReleaseAuthMixin, APIView):
    """POST .../releases/<id>/<start|pause|resume|advance|rollback>: a move by hand (or by the
    pipeline). A move the release's status does not allow is a 400 naming ``status``."""

    @extend_schema(
        operation_id="projects_releases_action",
        parameters=[
            OpenApiParameter(
                "action", str, OpenApiParameter.PATH, enum=list(ACTIONS), description="the move"
            )
        ],
        request=ActionInput,
        responses=ReleaseSerializer,
    )
    def post(self, request: Request, project: str, release_id: int, action: str) -> Response:
        caller = caller_for(request, project, "edit")
        release = release_get(caller.project, release_id)
        caller.may_touch(release.environment)
        serializer = ActionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        arguments: dict[str, Any] = {"actor": caller.actor, "actor_label": caller.actor_label}
        if action != "start":
            arguments["reason"] = serializer.validated_data.get("reason", "")
        ACTIONS[action](release=release, **arguments)
        return _release_response(caller, release.pk)
