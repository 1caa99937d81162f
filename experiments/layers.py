"""Reads on layers: which slices of a mutually exclusive layer are taken and which are free."""

from dataclasses import dataclass

from experiments.models import Experiment, ExperimentStatus, Project

# The statuses whose layer range is held (docs/user-guide.md "Layers"): a draft reserves its
# slice so that it can start, a running or paused experiment serves it. A concluded or
# rolled-back experiment frees its slice. There is no "scheduled" status: a draft with an end
# date is still a draft.
LAYER_HOLDING_STATUSES = (ExperimentStatus.DRAFT, ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
# What a start is checked against: a draft serves nobody, so the first to start wins.
LAYER_LIVE_STATUSES = (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
# Ranges are half-open [start, end): 0-0.5 and 0.5-1 touch but do not overlap.
LAYER_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LayerSlice:
    experiment: str
    name: str
    status: str
    status_label: str
    start: float
    end: float

    @property
    def width(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LayerUsage:
    layer: str
    taken: list[LayerSlice]
    free: list[tuple[float, float]]


def _free_ranges(taken: list[LayerSlice]) -> list[tuple[float, float]]:
    """The parts of [0, 1) no slice covers (slices sorted by start; overlaps tolerated, since
    rows saved before the rule may overlap)."""
    free: list[tuple[float, float]] = []
    cursor = 0.0
    for piece in taken:
        if piece.start > cursor + LAYER_TOLERANCE:
            free.append((cursor, piece.start))
        cursor = max(cursor, piece.end)
    if cursor < 1.0 - LAYER_TOLERANCE:
        free.append((cursor, 1.0))
    return free


def layers_for_project(project: Project, layer: str | None = None) -> list[LayerUsage]:
    """Every named layer of the project (or one), with the slices held by experiments in
    LAYER_HOLDING_STATUSES and the free ranges; a layer whose experiments all finished is
    listed with everything free. One query."""
    rows = Experiment.objects.filter(project=project).exclude(layer="")
    if layer is not None:
        rows = rows.filter(layer=layer)
    by_layer: dict[str, list[LayerSlice]] = {}
    labels = dict(ExperimentStatus.choices)
    for key, name, status, name_of_layer, start, end in rows.order_by(
        "layer", "layer_start", "key"
    ).values_list("key", "name", "status", "layer", "layer_start", "layer_end"):
        slices = by_layer.setdefault(name_of_layer, [])
        if status in LAYER_HOLDING_STATUSES:
            slices.append(
                LayerSlice(key, name, status, str(labels.get(status, status)), start, end)
            )
    return [
        LayerUsage(layer=name, taken=slices, free=_free_ranges(slices))
        for name, slices in sorted(by_layer.items())
    ]
