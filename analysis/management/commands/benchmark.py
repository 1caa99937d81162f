"""`manage.py benchmark <assign|ingest|analyze|all>`: throughput against a same-run baseline.

Each benchmark prints a table of ratios against its baseline measured in the same run and
writes JSON under var/bench/ (DESIGN.md section 10).
"""

import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


def _runners() -> dict[str, Any]:
    from analysis.benchmarks import run_analyze
    from assignments.benchmarks import run_assign, run_ingest

    return {"assign": run_assign, "ingest": run_ingest, "analyze": run_analyze}


class Command(BaseCommand):
    help = "Run a benchmark and print ratios against its baseline measured in the same run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=["assign", "ingest", "analyze", "all"])
        parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="benchmark-specific option, e.g. --option events=10000000",
        )

    def handle(self, *args: Any, **o: Any) -> None:
        runners = _runners()
        names = list(runners) if o["name"] == "all" else [o["name"]]
        extra = dict(item.split("=", 1) for item in o["option"])
        out_dir = Path(settings.VAR_DIR) / "bench"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            self.stdout.write(self.style.MIGRATE_HEADING(f"benchmark {name}"))
            result = runners[name](quick=o["quick"], options=extra, out=self.stdout)
            path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
            path.write_text(json.dumps(result, indent=2, default=str))
            self.stdout.write(f"wrote {path}")
