"""The property variant of `manage.py benchmark analyze` (bench/analyze.py): the same snapshot
with two of the experiment's three metrics read from event properties, against the plain
metrics, in the same run.

The generated purchases carry ``{"plan", "items", "amount"}`` (bench/analyze_data.py). The
variant's metrics replace the plain ones in the experiment for its runs, and the plain ones
come back after each:

- ``purchase`` (binomial) -> ``purchase-paid``: purchases with ``plan`` in ["pro", "team"];
- ``revenue`` (mean, winsorized) -> ``revenue-amount``: the ``amount`` property of purchases
  with ``plan`` in ["pro", "team"] and ``items`` >= 2 (value_property; "n/a" and missing
  amounts add nothing);
- ``ctr`` (ratio) unchanged.

Plain and filtered runs alternate, each in a fresh process, both on the full statement
(``ABACUS_INCREMENTAL_AGGREGATES=0``: the incremental path leaves filtered metrics to it), and
each one's best is kept; the ratio of the two is printed, for the whole run and for the
aggregation statement alone.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PAID = {"property": "plan", "op": "in", "value": ["pro", "team"]}
VARIANT_METRICS = [
    dict(
        key="purchase-paid",
        name="Purchase on a paid plan",
        kind="binomial",
        event_name="purchase",
        filters=[PAID],
    ),
    dict(
        key="revenue-amount",
        name="Amount per user, paid plans, 2+ items",
        kind="mean",
        event_name="purchase",
        winsorize_quantile=0.99,
        filters=[PAID, {"property": "items", "op": "gte", "value": 2}],
        value_property="amount",
    ),
]
REPLACES = {"purchase": "purchase-paid", "revenue": "revenue-amount"}
FULL_STATEMENT = {"ABACUS_INCREMENTAL_AGGREGATES": "0"}


def _ensure_metrics(project_id: int, window_hours: int) -> None:
    """The variant's metrics in the benchmark project (a kept project may predate them)."""
    from experiments.models import Metric, Project
    from experiments.services import metric_create

    project = Project.objects.get(pk=project_id)
    for metric in VARIANT_METRICS:
        if not Metric.objects.filter(project=project, key=metric["key"]).exists():
            metric_create(project=project, conversion_window_hours=window_hours, **metric)


@contextmanager
def _variant_metrics(experiment_id: int) -> Iterator[None]:
    """The experiment measures the variant's metrics inside (a direct update: the benchmark's
    experiment is running, and the services rightly refuse to change a live one's metrics)."""
    from experiments.models import ExperimentMetric, Metric

    experiment_metrics = ExperimentMetric.objects.filter(experiment_id=experiment_id)
    project_id = experiment_metrics.values_list("experiment__project_id", flat=True).first()
    by_key = {m.key: m.pk for m in Metric.objects.filter(project_id=project_id)}

    def swap(mapping: dict[str, str]) -> None:
        for old, new in mapping.items():
            experiment_metrics.filter(metric_id=by_key[old]).update(metric_id=by_key[new])

    swap(REPLACES)
    try:
        yield
    finally:
        swap({new: old for old, new in REPLACES.items()})


def contend(
    experiment_id: int, repeat: int, measure: Callable[..., dict[str, Any]], window_hours: int
) -> dict[str, Any]:
    """The best plain and the best filtered run (alternating), and their ratios."""
    from experiments.models import Experiment

    _ensure_metrics(Experiment.objects.get(pk=experiment_id).project_id, window_hours)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "filtered": []}
    for _ in range(repeat):
        runs["plain"].append(measure(env=FULL_STATEMENT))
        with _variant_metrics(experiment_id):
            runs["filtered"].append(measure(env=FULL_STATEMENT))
    best = {name: min(r, key=lambda run: run["seconds"]) for name, r in runs.items()}
    plain, filtered = best["plain"], best["filtered"]
    return {
        "plain_seconds": plain["seconds"],
        "filtered_seconds": filtered["seconds"],
        "ratio": filtered["seconds"] / plain["seconds"],
        "plain_aggregation_seconds": plain["aggregation_seconds"],
        "filtered_aggregation_seconds": filtered["aggregation_seconds"],
        "aggregation_ratio": filtered["aggregation_seconds"] / plain["aggregation_seconds"],
        "plain_runs_seconds": [r["seconds"] for r in runs["plain"]],
        "filtered_runs_seconds": [r["seconds"] for r in runs["filtered"]],
    }


HEADER = (
    f"{'events':>12} {'plain s':>8} {'filtered s':>10} {'ratio':>6} "
    f"{'plain agg s':>11} {'filtered agg s':>14} {'agg ratio':>9}"
)


def line(events: int, result: dict[str, Any]) -> str:
    return (
        f"{events:>12,} {result['plain_seconds']:>8.2f} {result['filtered_seconds']:>10.2f} "
        f"{result['ratio']:>6.2f} {result['plain_aggregation_seconds']:>11.2f} "
        f"{result['filtered_aggregation_seconds']:>14.2f} {result['aggregation_ratio']:>9.2f}"
    )
