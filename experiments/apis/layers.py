"""GET /api/v1/projects/P/layers/: each mutually exclusive layer's taken and free ranges."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.apis.access import project_for
from experiments.layers import layers_for_project


class LayerSliceSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    status = serializers.CharField()
    start = serializers.FloatField()
    end = serializers.FloatField()


class LayerSerializer(serializers.Serializer):
    layer = serializers.CharField()
    taken = LayerSliceSerializer(many=True)
    free = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="[start, end) ranges no draft, running or paused experiment holds",
    )


class LayerListApi(APIView):
    """Layers of the project (only those some experiment names), sorted by name."""

    @extend_schema(responses=LayerSerializer(many=True))
    def get(self, request: Request, project: str) -> Response:
        proj = project_for(request, project)
        layers = layers_for_project(proj)
        data = [
            {
                "layer": usage.layer,
                "taken": [
                    {"experiment": s.experiment, "status": s.status, "start": s.start, "end": s.end}
                    for s in usage.taken
                ],
                "free": [[start, end] for start, end in usage.free],
            }
            for usage in layers
        ]
        return Response(LayerSerializer(data, many=True).data)
