"""End to end: analysis reads on a real streaming replica (DATABASE_REPLICA_URL).

The test starts a throwaway PostgreSQL primary and a streaming replica of it (pg_basebackup
-R) on free ports, loads the test database's schema into the primary, and runs
tests/e2e/replica_scenario.py in a process of its own with DATABASE_URL and
DATABASE_REPLICA_URL naming them. Both servers log every statement, so the test reads which
server ran the aggregation and the export.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.fault import postgres
from tests.fault.stack import database_url, free_port

# The test database must exist (its schema is copied); this test writes nothing to it.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
ROOT = Path(__file__).resolve().parents[2]
AGGREGATION = "exposed AS ("  # the aggregation statement's first CTE (analysis/sql/builders.py)
EXPORT = 'FROM "analysis_resultrow" INNER JOIN'  # the export's streamed rows


def _between(log: str, start: str, end: str) -> str:
    """The part of a statement log between two markers of the scenario."""
    head = log.split(f"abacus-marker {start}", 1)[1]
    return head.split(f"abacus-marker {end}", 1)[0]


def _load_schema(primary: postgres.Server, env: dict[str, str]) -> None:
    """The test database's schema and rows (content types...) when the suite runs on
    PostgreSQL: a dump, a second; otherwise the migrations, about 20 s."""
    target = primary.url("abacus")
    dump = primary.bin / "pg_dump"
    if connection.vendor == "postgresql":
        dumped = subprocess.run(
            [str(dump), "--no-owner", "--no-privileges", "-d", database_url()],
            capture_output=True,
            check=True,
        )
        subprocess.run(
            [str(primary.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", target],
            input=dumped.stdout,
            capture_output=True,
            check=True,
        )
        return
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )


def test_analysis_and_exports_read_the_replica_and_equal_the_primary(tmp_path):
    """With DATABASE_REPLICA_URL set, the analysis's aggregation and the export run on the
    replica (its statement log has them, the primary's does not), right after the events were
    written (the read waits for the replica to replay them), with the primary's results; a
    replica whose replay is paused is passed over for the primary, which has the new events."""
    bin_dir = postgres.bindir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not installed")
    directory = postgres.Directory()
    primary = postgres.Server(directory.path, "primary", bin_dir)
    servers = [primary]
    try:
        primary.init().start()
        psql = str(bin_dir / "psql")
        subprocess.run(
            [psql, "-q", "-d", primary.url(), "-c", "CREATE DATABASE abacus"], check=True
        )
        env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_REPLICA_URL"},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": primary.url("abacus"),
            "ABACUS_VAR_DIR": str(tmp_path),
            "CELERY_BROKER_URL": "filesystem://",
            "ABACUS_DEMO": "0",
            # Every snapshot by the full statement, the read under test: stored per-unit
            # aggregates, where enabled, are brought up to date on the primary (a write).
            "ABACUS_INCREMENTAL_AGGREGATES": "0",
            "PYTHONUNBUFFERED": "1",
        }
        _load_schema(primary, env)
        replica = primary.replica("replica")
        servers.append(replica)
        env["DATABASE_REPLICA_URL"] = replica.url("abacus")
        env["CLOSED_PORT"] = str(free_port())
        run = subprocess.run(
            [sys.executable, "-m", "tests.e2e.replica_scenario"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        on_primary, on_replica = primary.log_text(), replica.log_text()
    finally:
        for server in reversed(servers):
            server.stop()

    try:
        # The analysis and the export ran on the replica, none of it on the primary.
        assert out["read_alias"] == "replica"
        assert AGGREGATION in _between(on_replica, "analysis", "primary")
        assert EXPORT in _between(on_replica, "analysis", "primary")
        assert AGGREGATION not in _between(on_primary, "analysis", "primary")
        assert EXPORT not in _between(on_primary, "analysis", "primary")
        # ... with the primary's results (the reference reads ran there).
        assert AGGREGATION in _between(on_primary, "primary", "lagging")
        assert EXPORT in _between(on_primary, "primary", "lagging")  # in a transaction there
        assert EXPORT not in _between(on_replica, "primary", "lagging")
        assert out["on_replica"] == out["on_primary"]
        assert out["stored_rows"] == out["on_primary"]["metrics"]
        assert out["snapshot_units"] == sum(out["on_primary"]["units"].values()) == 1200
        assert out["export_replica"] == out["export_primary"]
        assert out["export_replica"].count("\n") > 4  # a header and the rows

        # Paused replay: the replica misses the new events, so the primary answers, with them.
        assert out["lagging_alias"] == "default"
        assert AGGREGATION in _between(on_primary, "lagging", "resumed")
        assert AGGREGATION not in _between(on_replica, "lagging", "resumed")
        assert sum(out["lagging"]["units"].values()) == 1400
        # Resumed: the replica catches up and serves the same numbers.
        assert out["resumed_alias"] == "replica"
        assert AGGREGATION in _between(on_replica, "resumed", "unreachable")
        assert out["resumed"] == out["lagging"]
        # Unreachable: the primary again, same numbers.
        assert out["unreachable_alias"] == "default"
        assert AGGREGATION in _between(on_primary, "unreachable", "end")
        assert out["unreachable"] == out["lagging"]
    finally:
        directory.remove()
