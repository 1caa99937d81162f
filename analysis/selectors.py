"""Reads of analysis results, re-exported from the modules that hold them:

- analysis.results: snapshots in the API shape, the latest snapshot and run;
- analysis.history: snapshots over time (the dashboard's chart, the history API's pages);
- analysis.dashboard: a snapshot's metrics by role, progress toward the planned sample;
- analysis.health: the health problems a page must not hide;
- analysis.overview: the overview across experiments;
- analysis.export_selection: what an export holds.
"""

from analysis.dashboard import (
    ROLE_LABELS,
    ROLE_ORDER,
    MetricBlock,
    Progress,
    RoleGroup,
    experiment_progress,
    metric_groups,
)
from analysis.export_selection import (
    ExportFilter,
    SnapshotRows,
    export_row_count,
    export_snapshot_queryset,
    export_snapshots,
)
from analysis.health import Finding, health_findings
from analysis.history import HISTORY_MAX_POINTS, results_history_page, snapshot_history
from analysis.overview import OverviewRow, experiments_overview
from analysis.results import (
    LATEST_FIRST,
    latest_run,
    latest_snapshot,
    row_json,
    snapshot_json,
    snapshots_for,
)

__all__ = [
    "HISTORY_MAX_POINTS",
    "LATEST_FIRST",
    "ROLE_LABELS",
    "ROLE_ORDER",
    "ExportFilter",
    "Finding",
    "MetricBlock",
    "OverviewRow",
    "Progress",
    "RoleGroup",
    "SnapshotRows",
    "experiment_progress",
    "experiments_overview",
    "export_row_count",
    "export_snapshot_queryset",
    "export_snapshots",
    "health_findings",
    "latest_run",
    "latest_snapshot",
    "metric_groups",
    "results_history_page",
    "row_json",
    "snapshot_history",
    "snapshot_json",
    "snapshots_for",
]
