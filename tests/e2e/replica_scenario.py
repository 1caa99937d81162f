"""An analysis and an export against a primary and its streaming replica (test only).

Run by tests/e2e/test_read_replica.py as ``python -m tests.e2e.replica_scenario`` with
DATABASE_URL naming a throwaway primary and DATABASE_REPLICA_URL its streaming replica. It
writes an experiment and its events on the primary, then at once (no waiting for replication)
runs the analysis and an export, which read the replica; computes the same on the primary; then
pauses the replica's replay, writes more events and analyses again: the replica is behind, so
that read goes to the primary, as it does when the replica cannot be reached (CLOSED_PORT).
Marker statements (``SELECT 'abacus-marker ...'``) in the servers' statement logs separate the
phases. Prints one JSON object.
"""

import json
import os
from datetime import timedelta

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from analysis import aggregation  # noqa: E402
from analysis.compute import _metric_spec  # noqa: E402
from analysis.export_writers import export_stream  # noqa: E402
from analysis.selectors import ExportFilter  # noqa: E402
from analysis.services import analysis_run  # noqa: E402
from assignments.services import events_ingest  # noqa: E402
from core.replica import analysis_reads  # noqa: E402
from experiments.models import Experiment  # noqa: E402
from experiments.services import metric_create, project_create  # noqa: E402
from tests.factories import running_experiment  # noqa: E402

UNITS = 1200


def marker(text: str) -> None:
    """A statement both servers log, between two phases."""
    for alias in ("default", "replica"):
        with connections[alias].cursor() as cursor:
            cursor.execute(f"SELECT 'abacus-marker {text}'")


def events(start, first: int, count: int) -> list[dict]:
    out = []
    for i in range(first, first + count):
        ts = start + timedelta(seconds=1 + i)
        variant = "treatment" if i % 2 else "control"
        unit = f"u{i}"
        out.append({"event_id": f"x{i}", "type": "exposure", "experiment": "checkout-v2",
                    "variant": variant, "unit_id": unit, "timestamp": ts.isoformat()})  # fmt: skip
        if i % (3 if variant == "treatment" else 4) == 0:
            out.append({"event_id": f"p{i}", "type": "metric", "name": "purchase",
                        "unit_id": unit, "value": float(i % 50),
                        "timestamp": (ts + timedelta(seconds=1)).isoformat()})  # fmt: skip
    return out


def aggregates(experiment: Experiment, through) -> dict:
    """The experiment's per-variant sums at ``through``, on the connection the block chose."""
    ems = list(experiment.experiment_metrics.select_related("metric"))
    result = aggregation.experiment_aggregates(
        experiment_id=experiment.pk,
        project_id=experiment.project_id,
        metrics=[_metric_spec(em) for em in ems],
        since=experiment.phase_started_at,
        through=through,
    )
    variant = {v.pk: v.key for v in experiment.variants.all()}
    return {
        "units": {variant[k]: n for k, n in sorted(result.counts.units_by_variant.items())},
        "metrics": {
            f"{key}/{variant[v]}": [s.n, s.sum, s.sum_sq]
            for key, agg in sorted(result.metrics.items())
            for v, s in sorted(agg.stats.items())
        },
    }


def main() -> None:
    user = get_user_model().objects.create_user("pm", "pm@example.com", "pw-pm-12345")
    project = project_create(slug="shop", name="Shop", owner=user)
    metric_create(project=project, key="purchase", name="Purchase", kind="binomial",
                  event_name="purchase")  # fmt: skip
    metric_create(project=project, key="revenue", name="Revenue", kind="mean",
                  event_name="purchase")  # fmt: skip
    experiment = running_experiment(
        project,
        metrics=[{"metric": "purchase", "role": "primary"},
                 {"metric": "revenue", "role": "secondary"}],
    )  # fmt: skip
    start = timezone.now() - timedelta(hours=2)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=start, phase_started_at=start)
    experiment.refresh_from_db()
    stored = events_ingest(project=project, events=events(start, 0, UNITS))
    assert stored.accepted > UNITS, stored

    # At once: the analysis reads the replica, which must first replay these events.
    marker("analysis")
    snapshot = analysis_run(experiment_id=experiment.pk)
    with analysis_reads() as alias:
        on_replica = aggregates(experiment, snapshot.data_through)
    export_replica = b"".join(export_stream(ExportFilter(project=project), "csv")).decode()

    marker("primary")
    on_primary = aggregates(experiment, snapshot.data_through)  # outside a block: the primary
    with transaction.atomic():  # inside a transaction on the primary, reads stay there
        export_primary = b"".join(export_stream(ExportFilter(project=project), "csv")).decode()
    stored_rows = {
        f"{row.metric_key}/{row.variant}": [row.n, row.sum, row.sum_sq]
        for row in snapshot.rows.all()
    }

    # The replica stops replaying: it falls behind the next events.
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
    events_ingest(project=project, events=events(start, UNITS, 200))
    settings.ABACUS_REPLICA_MAX_WAIT_SECONDS = 0.5
    marker("lagging")
    through = timezone.now()
    with analysis_reads() as lagging_alias:
        lagging = aggregates(experiment, through)
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_resume()")
    settings.ABACUS_REPLICA_MAX_WAIT_SECONDS = 30
    marker("resumed")
    with analysis_reads() as resumed_alias:
        resumed = aggregates(experiment, through)
    marker("unreachable")
    # The replica goes away (its port refuses connections): the primary answers.
    connections["replica"].close()
    connections["replica"].settings_dict["PORT"] = os.environ["CLOSED_PORT"]
    with analysis_reads() as unreachable_alias:
        unreachable = aggregates(experiment, through)
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 'abacus-marker end'")
    print(
        json.dumps(
            {
                "read_alias": alias,
                "on_replica": on_replica,
                "on_primary": on_primary,
                "stored_rows": stored_rows,
                "snapshot_units": snapshot.total_units,
                "export_replica": export_replica,
                "export_primary": export_primary,
                "lagging_alias": lagging_alias,
                "lagging": lagging,
                "resumed_alias": resumed_alias,
                "resumed": resumed,
                "unreachable_alias": unreachable_alias,
                "unreachable": unreachable,
            }
        )
    )


if __name__ == "__main__":
    main()
