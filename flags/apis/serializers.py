"""Serializers of the flags API: shapes only (the services hold every rule); typed so the
OpenAPI schema documents each request and answer (docs/flags.md)."""

from typing import Any

from rest_framework import serializers

from bucketing.flag_checks import RULE_TYPES
from flags.models import ChangeRequest, Flag, FlagType


class VariationSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100)
    value = serializers.JSONField(allow_null=True, help_text="of the flag's type; never null")


class PrerequisiteSerializer(serializers.Serializer):
    flag = serializers.CharField(max_length=100)
    variations = serializers.ListField(child=serializers.CharField(max_length=100))


class RuleSerializer(serializers.Serializer):
    """One rule (first match wins): force, rollout or experiment."""

    id = serializers.CharField(max_length=32, required=False, allow_blank=True)
    type = serializers.ChoiceField(choices=RULE_TYPES)
    condition = serializers.JSONField(required=False, allow_null=True)
    segment = serializers.CharField(
        max_length=100, required=False, allow_null=True, allow_blank=True
    )
    variation = serializers.CharField(max_length=100, required=False, help_text="force")
    hash_attribute = serializers.CharField(max_length=64, required=False, help_text="rollout")
    weights = serializers.DictField(
        child=serializers.FloatField(min_value=0, max_value=1),
        required=False,
        help_text='rollout: {"<variation key>": share}, shares summing to 1',
    )
    experiment = serializers.CharField(max_length=100, required=False, help_text="experiment")


class FlagEnvironmentSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    default_variation = serializers.CharField(max_length=100, required=False)
    rules = RuleSerializer(many=True, required=False)


class EnvironmentConfigSerializer(FlagEnvironmentSerializer):
    """A flag in one environment, as the toggle answers it."""

    environment = serializers.CharField(source="environment.key", read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class FlagSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    type = serializers.ChoiceField(choices=FlagType.choices, required=False)
    variations = VariationSerializer(many=True, required=False)
    off_variation = serializers.CharField(max_length=100, required=False)
    default_variation = serializers.CharField(
        max_length=100,
        required=False,
        write_only=True,
        help_text="create only: every environment's default (the off variation when omitted)",
    )
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False)
    owner = serializers.CharField(
        max_length=150, required=False, allow_null=True, help_text="username of the owner"
    )
    temporary = serializers.BooleanField(required=False)
    archived = serializers.BooleanField(required=False)
    prerequisites = PrerequisiteSerializer(many=True, required=False)
    environments = serializers.DictField(
        child=FlagEnvironmentSerializer(),
        required=False,
        help_text='{"<environment key>": {"enabled", "default_variation", "rules"}}',
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, flag: Flag) -> dict[str, Any]:
        data = super().to_representation(flag)
        data["owner"] = flag.owner.get_username() if flag.owner_id else None
        data["environments"] = {
            c.environment.key: {
                "enabled": c.enabled,
                "default_variation": c.default_variation,
                "rules": c.rules,
            }
            for c in flag.configs.all()
        }
        return data


class ChangeRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    flag = serializers.CharField(source="flag.key")
    environment = serializers.CharField(source="environment.key")
    change = FlagEnvironmentSerializer()
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    status = serializers.CharField(read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, allow_null=True, default=None
    )
    reviewed_by = serializers.CharField(
        source="reviewed_by.username", read_only=True, allow_null=True, default=None
    )
    review_comment = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    reviewed_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def to_representation(self, request: ChangeRequest) -> dict[str, Any]:
        data = super().to_representation(request)
        data["change"] = request.change  # as stored: only the fields it sets
        return data


class ReviewInput(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class ToggleInput(serializers.Serializer):
    enabled = serializers.BooleanField()
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class ScheduledChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    environment = serializers.CharField(max_length=64, source="environment.key")
    at = serializers.DateTimeField()
    change = serializers.JSONField(
        help_text='{"enabled": true|false} or {"rule": "<rule id>", "variation": "<key>", '
        '"percent": 0-100}'
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    status = serializers.CharField(read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    created_at = serializers.DateTimeField(read_only=True)
    applied_at = serializers.DateTimeField(read_only=True, allow_null=True)


class EnvironmentSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=100)
    client_key = serializers.CharField(read_only=True)
    production = serializers.BooleanField(read_only=True)
    position = serializers.IntegerField(read_only=True)


class SegmentSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    condition = serializers.JSONField(required=False, help_text="a GrowthBook condition")
    include = serializers.ListField(
        child=serializers.CharField(max_length=256), required=False, help_text="unit ids"
    )
    exclude = serializers.ListField(
        child=serializers.CharField(max_length=256), required=False, help_text="unit ids"
    )
    used_by = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text='where it is used: "flag:<key>@<environment>", "experiment:<key>"',
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, segment: Any) -> dict[str, Any]:
        data = super().to_representation(segment)
        data["used_by"] = (self.context.get("usage") or {}).get(segment.key, [])
        return data
