"""Data migrations: what they fill in for rows written before the field existed."""

import importlib
from types import SimpleNamespace

import pytest

cause_migration = importlib.import_module("analysis.migrations.0004_snapshot_cause")


@pytest.mark.parametrize(
    "recommendation, healthy, harmed, cause",
    [
        ("keep", True, False, "improvement"),
        ("extend", True, False, "inconclusive"),
        ("rollback", False, False, "unhealthy"),
        ("rollback", True, True, "harm"),
        ("rollback", True, False, "no_improvement"),
    ],
)
def test_old_snapshots_get_the_cause_the_dashboard_used_to_derive(
    recommendation, healthy, harmed, cause
):
    snapshot = SimpleNamespace(recommendation=recommendation, health={"healthy": healthy})
    assert cause_migration.derive_cause(snapshot, harmed) == cause
