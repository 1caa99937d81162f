"""The load test's short form, for CI: about a minute of sustained traffic on the test database.

The long form (several minutes, on PostgreSQL) is `make loadtest` (bench/load.py); see
docs/benchmarks.md.
"""

import json
import os
from pathlib import Path

import pytest

from bench.load import LoadStack, problems, run_load, table

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_sustained_assignment_and_ingestion_with_analysis_running(tmp_path):
    """Zero errors and zero lost events at over half the peak ingestion rate, analyses running."""
    with LoadStack(tmp_path) as (target, count, snapshots):
        report = run_load(
            target,
            duration=float(os.environ.get("ABACUS_LOAD_SECONDS", 30)),
            peak_seconds=8,
            fraction=0.55,
            count_stored=count,
            snapshots_since=snapshots,
        )
    print(table(report))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load-short.json").write_text(json.dumps(report, indent=2))
    assert not problems(report), "\n".join(problems(report)) + "\n" + table(report)
