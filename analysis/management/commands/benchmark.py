"""`manage.py benchmark <assign|ingest|analyze|all>`: the entry point of bench/ (developer
tooling at the top of the repository, not part of the app). The benchmarks, and what they
measure, are in bench/; the figures in docs/benchmarks.md."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

import bench


class Command(BaseCommand):
    help = "Run a benchmark and print ratios against its baseline measured in the same run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=[*bench.BENCHMARKS, "all"])
        parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="benchmark-specific option, e.g. --option events=10000000",
        )

    def handle(self, *args: Any, **o: Any) -> None:
        bad = [item for item in o["option"] if "=" not in item]
        if bad:
            raise CommandError(f"--option takes key=value, not {', '.join(bad)}")
        options = dict(item.split("=", 1) for item in o["option"])
        for name in list(bench.BENCHMARKS) if o["name"] == "all" else [o["name"]]:
            self.stdout.write(self.style.MIGRATE_HEADING(f"benchmark {name}"))
            path = bench.run(
                name,
                quick=o["quick"],
                options=options,
                out=self.stdout,
                out_dir=Path(settings.VAR_DIR) / "bench",
            )
            self.stdout.write(f"wrote {path}")
