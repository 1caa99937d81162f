"""Delete a project's bad events (metric events, exposures, flag exposures) by id, unit, name
and time range; audited as "cli"."""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from assignments.services import EVENT_TYPES, events_delete
from core.errors import DomainError
from experiments.models import Project


def _timestamp(name: str) -> Any:
    def parse(value: str) -> datetime:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"--{name} {value!r} is not ISO 8601") from None
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)

    parse.__name__ = f"ISO 8601 timestamp for --{name}"
    return parse


class Command(BaseCommand):
    help = (
        "Delete stored events matching every filter given (at least one); prints the counts. "
        "Filters may repeat (--unit u1 --unit u2). See docs/operations.md 'Removing bad events'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--event-id", action="append", dest="event_ids", help="event id")
        parser.add_argument("--unit", action="append", dest="unit_ids", help="unit id")
        parser.add_argument("--name", action="append", dest="names", help="metric event name")
        parser.add_argument("--since", type=_timestamp("since"), help="timestamp >= this")
        parser.add_argument("--until", type=_timestamp("until"), help="timestamp < this")
        parser.add_argument("--type", choices=EVENT_TYPES, default="all", dest="kind")
        parser.add_argument("--dry-run", action="store_true", help="only count the matches")

    def handle(self, *args: object, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project '{options['project']}'.")
        try:
            deletion = events_delete(
                project=project,
                actor_label="cli",
                event_ids=options["event_ids"],
                unit_ids=options["unit_ids"],
                names=options["names"],
                kind=options["kind"],
                since=options["since"],
                until=options["until"],
                dry_run=options["dry_run"],
            )
        except DomainError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from exc
        verb = "would delete" if deletion.dry_run else "deleted"
        counts = deletion.matched if deletion.dry_run else deletion.deleted
        self.stdout.write(f"matched: {_counts(deletion.matched)}; {verb}: {_counts(counts)}")


def _counts(counts: dict[str, int]) -> str:
    return (
        f"{counts['metric']} metric events, {counts['exposure']} exposures, "
        f"{counts['flag_exposure']} flag exposures"
    )
