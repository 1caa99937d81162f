"""The library of decided experiments: what each tested, what was decided and why, and the
primary metrics' lifts from its last stored snapshot (read, never recomputed)."""

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Exists, OuterRef, Q, Subquery, TextField
from django.db.models.functions import Cast

from analysis.models import ResultRow, ResultSnapshot
from experiments.models import Experiment, ExperimentStatus, MetricRole, Project, Variant

# The decision filter: shipped a treatment, kept the control, or rolled back.
DECISIONS = {
    "ship": "Shipped a variant",
    "keep_control": "Kept the control",
    "rolled_back": "Rolled back",
}
LIBRARY_LIMIT = 200


@dataclass(frozen=True)
class LibraryLift:
    metric: str
    variant: str
    lift_rel: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    status: str


@dataclass(frozen=True)
class LibraryEntry:
    key: str
    name: str
    hypothesis: str
    decision: str  # a key of DECISIONS
    decision_variant: str
    rationale: str
    tags: list[str]
    ended_at: datetime | None
    recommendation: str  # of the last snapshot; "" when there is none
    lifts: list[LibraryLift] = field(default_factory=list)

    @property
    def decision_label(self) -> str:
        if self.decision == "ship":
            return f"Shipped {self.decision_variant}"
        return DECISIONS[self.decision]


def _like(text: str) -> Q:
    """Text in the name, key, hypothesis, rationale or tags (tags as their stored JSON text,
    in both the plain and the escaped spelling of non-ASCII characters)."""
    escaped = json.dumps(text)[1:-1]
    condition = (
        Q(name__icontains=text)
        | Q(key__icontains=text)
        | Q(hypothesis__icontains=text)
        | Q(rationale__icontains=text)
        | Q(tags_text__icontains=text)
    )
    if escaped != text:
        condition |= Q(tags_text__icontains=escaped)
    return condition


def library_search(
    project: Project, *, q: str = "", tag: str = "", decision: str = ""
) -> list[LibraryEntry]:
    """Concluded and rolled-back experiments of the project, newest decision first (at most
    LIBRARY_LIMIT), filtered by free text, one tag (exact, case-insensitive) and a decision
    (a key of DECISIONS; anything else is ignored by the callers' validation). Two queries."""
    control_decided = Variant.objects.filter(
        experiment=OuterRef("pk"), is_control=True, key=OuterRef("decision_variant")
    )
    last_snapshot = ResultSnapshot.objects.filter(experiment=OuterRef("pk")).order_by(
        "-computed_at", "-id"
    )
    experiments = (
        Experiment.objects.filter(
            project=project,
            status__in=[ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK],
        )
        .annotate(
            tags_text=Cast("tags", TextField()),
            kept_control=Exists(control_decided),
            last_snapshot_id=Subquery(last_snapshot.values("id")[:1]),
            last_recommendation=Subquery(last_snapshot.values("recommendation")[:1]),
        )
        .order_by("-ended_at", "-id")
    )
    if q:
        experiments = experiments.filter(_like(q))
    if tag:
        experiments = experiments.filter(_like(tag))  # narrowed to the exact tag below
    if decision == "rolled_back":
        experiments = experiments.filter(status=ExperimentStatus.ROLLED_BACK)
    elif decision in ("ship", "keep_control"):
        experiments = experiments.filter(
            status=ExperimentStatus.CONCLUDED, kept_control=decision == "keep_control"
        )
    wanted = tag.strip().casefold()
    rows = [
        e
        for e in experiments[: LIBRARY_LIMIT * 2 if wanted else LIBRARY_LIMIT]
        if not wanted or wanted in {t.casefold() for t in e.tags or []}
    ][:LIBRARY_LIMIT]
    lifts: dict[int, list[LibraryLift]] = {}
    snapshot_ids = [e.last_snapshot_id for e in rows if e.last_snapshot_id]
    for row in ResultRow.objects.filter(
        snapshot_id__in=snapshot_ids, role=MetricRole.PRIMARY, is_control=False
    ).order_by("snapshot_id", "id"):
        lifts.setdefault(row.snapshot_id, []).append(
            LibraryLift(
                metric=row.metric_key,
                variant=row.variant,
                lift_rel=row.lift_rel,
                ci_low=row.ci_low,
                ci_high=row.ci_high,
                significant=row.significant,
                status=row.status,
            )
        )
    return [
        LibraryEntry(
            key=e.key,
            name=e.name,
            hypothesis=e.hypothesis,
            decision=(
                "rolled_back"
                if e.status == ExperimentStatus.ROLLED_BACK
                else "keep_control"
                if e.kept_control
                else "ship"
            ),
            decision_variant=e.decision_variant,
            rationale=e.rationale,
            tags=list(e.tags or []),
            ended_at=e.ended_at,
            recommendation=e.last_recommendation or "",
            lifts=lifts.get(e.last_snapshot_id, []),
        )
        for e in rows
    ]


def library_tags(project: Project) -> list[str]:
    """Every tag of the project's decided experiments, sorted, for the filter's choices."""
    tags: set[str] = set()
    for values in Experiment.objects.filter(
        project=project, status__in=[ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK]
    ).values_list("tags", flat=True):
        tags.update(values or [])
    return sorted(tags, key=str.casefold)
