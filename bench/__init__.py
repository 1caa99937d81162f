"""Benchmarks and the load test: developer tooling, not part of the app.

- ``assign`` (bench/assign.py): assignment decisions, in-process and over HTTP, against the
  growthbook SDK;
- ``ingest`` (bench/ingest.py, PostgreSQL only): ``POST /api/v1/events`` against a raw ``COPY``;
- ``analyze`` (bench/analyze.py): one snapshot computed in SQL against the same in pandas;
- ``incremental`` (bench/incremental.py): a snapshot after 1% new events from the stored per-unit
  aggregates against the full recompute;
- ``evaluate`` (bench/evaluate.py): ``POST /api/v1/evaluate`` and the flag decision in-process
  against the growthbook SDK evaluating the same payload;
- ``propagation`` (bench/propagation.py): a kill switch reaching growthbook SDKs in streaming
  mode (``/sub/<client key>``), p50 / p99 against 1 s;
- ``serve`` (bench/serve.py): returning units' ``/assign`` and ``/evaluate`` through gunicorn
  as production starts it, against a trivial JSON view (``/healthz``) in the same run;
- the load test (bench/load.py): ``make loadtest``, short form in tests/load/test_load.py.

Run a benchmark with ``manage.py benchmark <name>|all [--quick] [--option key=value ...]`` (the
command only parses its arguments and calls `run`); docs/benchmarks.md has the figures. Each
prints a table of rates against a baseline measured in the same run and writes its numbers as
JSON under ``var/bench/``. Nothing in the apps imports this package.
"""

import json
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import IO, Any

BENCHMARKS = {
    "assign": "bench.assign:run_assign",
    "ingest": "bench.ingest:run_ingest",
    "analyze": "bench.analyze:run_analyze",
    "evaluate": "bench.evaluate:run_evaluate",
    "propagation": "bench.propagation:run_propagation",
    "serve": "bench.serve:run_serve",
    "incremental": "bench.incremental:run_incremental",
}


def runner(name: str) -> Callable[..., dict[str, Any]]:
    """The function that runs benchmark ``name`` (imported only when asked for)."""
    module, function = BENCHMARKS[name].split(":")
    return getattr(import_module(module), function)


def run(name: str, *, quick: bool, options: dict[str, str], out: IO[str], out_dir: Path) -> Path:
    """Run one benchmark (on a migrated database: a fresh one is migrated first), write its
    result as JSON under ``out_dir`` and return the file."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    result = runner(name)(quick=quick, options=options, out=out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
