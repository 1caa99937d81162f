"""The pre-launch power calculator."""

import math
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.models import MetricKind
from experiments.power_plans import power_plan
from experiments.services import ALPHA_MAX, ALPHA_MIN
from stats.power import PIPELINE_LOOKS, InvalidInput


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise serializers.ValidationError(f"Give {what} as numbers separated by commas.") from None
    if not all(math.isfinite(v) for v in values):
        raise serializers.ValidationError(f"Give {what} as finite numbers.")
    return values


class PowerInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=MetricKind.choices, default=MetricKind.BINOMIAL)
    baseline = serializers.FloatField(
        help_text="Baseline conversion rate (binomial, 0.1 = 10%) or mean per unit."
    )
    variance = serializers.FloatField(
        required=False, allow_null=True, help_text="Per-unit variance (not binomial)."
    )
    mde = serializers.FloatField(
        required=False, allow_null=True, help_text="Relative minimum detectable effect (0.05)."
    )
    sample_size = serializers.IntegerField(
        required=False, allow_null=True, min_value=4, help_text="Planned units over all variants."
    )
    alpha = serializers.FloatField(default=0.05, min_value=ALPHA_MIN, max_value=ALPHA_MAX)
    power = serializers.FloatField(default=0.8, min_value=0.5, max_value=0.99)
    variants = serializers.IntegerField(default=2, min_value=2, max_value=20)
    weights = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="The variants' weights, comma-separated (0.9,0.1); default an even split.",
    )
    control = serializers.IntegerField(
        default=0, min_value=0, help_text="Index of the control among the weights."
    )
    primary_metrics = serializers.IntegerField(default=1, min_value=1, max_value=20)
    daily_units = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="New units a day at full coverage (for the duration).",
    )
    coverage = serializers.FloatField(default=1.0, min_value=0.0001, max_value=1)
    ramp = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Ramp plan as coverage:min_hours stages, comma-separated (0.05:24,0.5:24,1:0); "
        "replaces coverage for the duration.",
    )
    looks = serializers.IntegerField(
        default=PIPELINE_LOOKS,
        min_value=1,
        max_value=PIPELINE_LOOKS,
        help_text="Group-sequential looks; the analysis counts up to 100 (one per 1% of "
        "information).",
    )
    method = serializers.ChoiceField(
        choices=["group_sequential", "sequential", "fixed"], default="group_sequential"
    )

    def validate_weights(self, value: str) -> list[float] | None:
        if not value.strip():
            return None
        weights = _numbers(value, "the weights")
        if len(weights) < 2:
            raise serializers.ValidationError("Give a weight for each variant (at least two).")
        if len(weights) > 20:
            raise serializers.ValidationError("At most 20 variants.")
        if any(w <= 0 for w in weights):
            raise serializers.ValidationError("Every weight must be above 0.")
        return weights

    def validate_ramp(self, value: str) -> list[dict[str, float]]:
        stages = []
        for k, part in enumerate(p for p in value.split(",") if p.strip()):
            pieces = part.split(":")
            if len(pieces) != 2 or not all(piece.strip() for piece in pieces):
                raise serializers.ValidationError(
                    f"Stage {k + 1}: write coverage:min_hours, e.g. 0.05:24."
                )
            coverage, hours = _numbers(",".join(pieces), "coverage and hours")
            if not 0 < coverage <= 1:
                raise serializers.ValidationError(
                    f"Stage {k + 1}: coverage must be above 0 and at most 1."
                )
            if hours < 0:
                raise serializers.ValidationError(f"Stage {k + 1}: hours cannot be negative.")
            stages.append({"coverage": coverage, "min_hours": hours})
        return stages

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["kind"] == MetricKind.BINOMIAL:
            if not 0 < data["baseline"] < 1:
                raise serializers.ValidationError(
                    {"baseline": ["A conversion rate is between 0 and 1 (0.1 = 10%)."]}
                )
        elif data.get("variance") is None:
            raise serializers.ValidationError(
                {"variance": ["Give the per-unit variance (the standard deviation squared)."]}
            )
        elif not data["variance"] > 0:
            raise serializers.ValidationError(
                {"variance": ["The variance must be above 0 (the standard deviation squared)."]}
            )
        if data.get("mde") is None and data.get("sample_size") is None:
            raise serializers.ValidationError(
                {"mde": ["Give an MDE (0.05 = +5%) or a planned sample size."]}
            )
        if data.get("mde") is not None and data["mde"] <= 0:
            raise serializers.ValidationError({"mde": ["The MDE must be above 0 (0.05 = +5%)."]})
        weights = data.get("weights")
        if weights:
            if "variants" in self.initial_data and data["variants"] != len(weights):
                raise serializers.ValidationError(
                    {"weights": [f"{len(weights)} weights for {data['variants']} variants."]}
                )
            data["variants"] = len(weights)
        if data["control"] >= data["variants"]:
            raise serializers.ValidationError(
                {"control": [f"The control is one of the {data['variants']} variants (0 first)."]}
            )
        if data.get("daily_units") is not None and data["daily_units"] <= 0:
            data["daily_units"] = None
        return data


class PowerOutput(serializers.Serializer):
    method = serializers.CharField()
    alpha_per_test = serializers.FloatField()
    per_arm = serializers.IntegerField(help_text="Units per variant (the largest arm if uneven).")
    arms = serializers.ListField(child=serializers.IntegerField(), help_text="Units per variant.")
    weights = serializers.ListField(child=serializers.FloatField())
    control = serializers.IntegerField()
    deciding = serializers.IntegerField(help_text="The treatment whose comparison needs most.")
    total = serializers.IntegerField()
    fixed_total = serializers.IntegerField()
    inflation = serializers.FloatField()
    looks = serializers.IntegerField()
    mde = serializers.FloatField()
    days = serializers.FloatField(allow_null=True)


class PowerApi(APIView):
    """GET /api/v1/power: the pre-launch calculator (sample size and duration, or the MDE).
    Input that no experiment can satisfy is a 400 naming the field, e.g. {"mde": ["..."]}."""

    @extend_schema(parameters=[PowerInput], responses=PowerOutput)
    def get(self, request: Request) -> Response:
        serializer = PowerInput(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        try:
            plan = power_plan(**serializer.validated_data)
        except InvalidInput as exc:
            return Response(
                {exc.field: [f"{str(exc)[:1].upper()}{str(exc)[1:]}."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            return Response(
                {"detail": f"Cannot size this experiment: {exc}."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(PowerOutput(plan).data)
