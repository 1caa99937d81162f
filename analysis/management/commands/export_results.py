"""Export result snapshots as CSV, JSON or Parquet: the same tables as the UI and the API."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analysis.breakdown import MAX_BREAKDOWN_LEVELS, BreakdownTooSlow
from analysis.breakdown_aggregation import BREAKDOWN_LEVELS
from analysis.breakdown_exports import breakdown_export_stream
from analysis.export_writers import export_stream
from analysis.exports import FORMATS, HISTORY, export_filter_build
from analysis.selectors import export_row_count
from core.errors import DomainError
from experiments.models import Experiment, Project


class ProgressBar:
    """Rows written out of the total, on stderr: redrawn in place on a terminal, and every 10%
    as its own line otherwise (logs, CI)."""

    def __init__(self, total: int, stream: Any, enabled: bool = True, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width
        self.done = 0
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_decile = -1
        self.last_draw = 0.0

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        fraction = self.done / self.total if self.total else 1.0
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw < 0.1 and self.done < self.total:
                return
            self.last_draw = now
            self.stream.write("\r" + self.line(fraction))
        else:
            decile = int(fraction * 10)
            if decile == self.last_decile:
                return
            self.last_decile = decile
            self.stream.write(self.line(fraction) + "\n")
        self.stream.flush()

    def line(self, fraction: float) -> str:
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        return f"exporting [{bar}] {fraction:4.0%} {self.done:,}/{self.total:,} rows"

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class _TextOut:
    """Bytes onto a text stream (stdout captured by call_command); CSV and JSON are UTF-8."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode())

    def flush(self) -> None:
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Export result snapshots: one row per (experiment, snapshot, metric, variant) with the "
        "sufficient statistics and every reported number (columns: docs/exports.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--experiment",
            action="append",
            default=[],
            help="experiment key; repeat or comma-separate for several (default: all)",
        )
        parser.add_argument(
            "--status", action="append", default=[], help="only experiments in this status"
        )
        parser.add_argument(
            "--since", help="snapshots with data through at or after (date or ISO time)"
        )
        parser.add_argument(
            "--until", help="snapshots with data through before (a date includes that day)"
        )
        parser.add_argument(
            "--latest", action="store_true", help="only each experiment's latest snapshot"
        )
        parser.add_argument(
            "--history",
            choices=HISTORY,
            default="all",
            help="looks: only snapshots that were a counted look or the final analysis",
        )
        parser.add_argument(
            "--format", choices=FORMATS, help="default: from the --output suffix, else csv"
        )
        parser.add_argument("--output", "-o", default="-", help="file path, or - for stdout")
        parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
        parser.add_argument(
            "--dimension",
            help="export one experiment's breakdown by this exposure attribute instead: one row "
            "per (level, metric, treatment arm) at its latest snapshot's cut-off",
        )
        parser.add_argument(
            "--levels",
            type=int,
            default=BREAKDOWN_LEVELS,
            help=f"with --dimension: values kept as levels (default {BREAKDOWN_LEVELS})",
        )

    def handle(self, *args: Any, **o: Any) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project '{o['project']}'.")
        output = o["output"]
        if o["format"]:
            fmt = o["format"]
        elif output == "-":
            fmt = "csv"
        else:
            fmt = Path(output).suffix.lstrip(".").lower()
            if fmt not in FORMATS:
                raise CommandError(
                    f"Cannot tell the format from '{output}': pass --format ({', '.join(FORMATS)})."
                )
        if o["dimension"] is not None:
            self._breakdown(project, o, fmt, output)
            return
        try:
            flt = export_filter_build(
                project=project,
                experiments=o["experiment"],
                statuses=o["status"],
                since=o["since"],
                until=o["until"],
                latest_only=o["latest"],
                history=o["history"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        total = export_row_count(flt)
        progress = ProgressBar(total, self.stderr._out, enabled=not o["no_progress"])
        path = self._output(output, fmt, lambda out: self._write(out, flt, fmt, progress))
        if path is not None:
            self.stderr.write(f"wrote {progress.done:,} rows to {path}")

    def _output(self, output: str, fmt: str, write: Callable[[Any], None]) -> Path | None:
        """``write`` onto stdout (``-``) or into the file ``output``; the file's path."""
        if output == "-":
            binary = getattr(self.stdout._out, "buffer", None)
            if binary is None and fmt == "parquet":
                raise CommandError("Parquet is binary: pass --output <file>.parquet.")
            write(binary or _TextOut(self.stdout._out))
            return None
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            write(out)
        partial.replace(path)  # never leave a truncated file under the final name
        return path

    def _breakdown(self, project: Project, o: dict[str, Any], fmt: str, output: str) -> None:
        """--dimension: the breakdown export of the one experiment named."""
        keys = [k for value in o["experiment"] for k in value.split(",") if k.strip()]
        if len(keys) != 1:
            raise CommandError("--dimension exports one experiment's breakdown: pass --experiment.")
        for option in ("since", "until", "status"):
            if o[option]:
                raise CommandError(f"--{option} does not apply to a breakdown (--dimension).")
        if o["latest"] or o["history"] != "all":
            raise CommandError("--latest and --history do not apply to a breakdown (--dimension).")
        if not 1 <= o["levels"] <= MAX_BREAKDOWN_LEVELS:
            raise CommandError(f"--levels must be between 1 and {MAX_BREAKDOWN_LEVELS}.")
        experiment = Experiment.objects.filter(project=project, key=keys[0].strip()).first()
        if experiment is None:
            raise CommandError(f"No experiment '{keys[0].strip()}' in project '{project.slug}'.")
        try:
            chunks = breakdown_export_stream(experiment, o["dimension"], fmt, levels=o["levels"])
        except (DomainError, BreakdownTooSlow) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from None

        def write(out: Any) -> None:
            for chunk in chunks:
                out.write(chunk)
            out.flush()

        path = self._output(output, fmt, write)
        if path is not None:
            self.stderr.write(f"wrote the breakdown by '{o['dimension']}' to {path}")

    def _write(self, out: BinaryIO, flt: Any, fmt: str, progress: ProgressBar) -> None:
        if progress.total == 0:
            progress.update(0)
        for chunk in export_stream(flt, fmt, on_rows=progress.update):
            out.write(chunk)
        out.flush()
        progress.finish()
