"""The load test's short form, for CI: about a minute of sustained traffic on the test database.

The long form (several minutes, on PostgreSQL) is `make loadtest` (bench/load.py); see
docs/benchmarks.md.
"""

import json
import os
import warnings
from pathlib import Path

import pytest

from bench.load import LoadStack, problems, run_load, table

pytestmark = [pytest.mark.load, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_sustained_assignment_and_ingestion_with_analysis_running(tmp_path):
    """Zero errors and zero lost events at over half the peak ingestion rate, analyses running
    (the rate is checked when the machine's cores are not busy with other work, before and
    during the run)."""
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
    found = problems(report)
    rate = [p for p in found if p.startswith("achieved")]
    busy_before = report["load_average_at_start"] >= (os.cpu_count() or 1)
    # The peak measured again after the sustained phase: a machine whose cores other work took
    # meanwhile (the load average misses a hypervisor's steal) ingests less than it did
    # before. A CI run at load average 1.3 measured a peak of 4,268 events/s, a fifth of an idle
    # machine's, then achieved 679: whether the machine or abacus had slowed, it could not tell.
    # abacus slowing under its own load shows as a low achieved rate with the peak back up
    # afterwards, and fails.
    slower_after = report["peak_after_events_per_second"] < 0.6 * report["peak_events_per_second"]
    if rate and (busy_before or slower_after):
        # The rate is a throughput figure: on cores shared with other work (load average at or
        # above the core count when the peak was measured) the peak and the sustained phase see
        # different neighbours, and the ratio measures them, not abacus (a CI run at load 5.3 on
        # 2 cores measured a peak of 1,975 events/s, a tenth of an idle machine's). Errors, lost
        # events and analyses are checked whatever the load; the rate is reported.
        warnings.warn(f"rate not checked on a busy machine: {rate[0]}", stacklevel=1)
        found = [p for p in found if p not in rate]
    assert not found, "\n".join(found) + "\n" + table(report)
