"""Run the event-storage maintenance now (what the beat does hourly): weekly partitions ahead,
expired weeks dropped, expired rows deleted; prints what it created, dropped and deleted."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from assignments.services import event_storage_maintain, orphan_partitions_drop
from experiments.models import Project


class Command(BaseCommand):
    help = (
        "Create the event tables' weekly partitions ahead and apply each project's event "
        "retention (docs/operations.md 'Event tables: partitions and retention')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="only this project (slug)")
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would change, change nothing"
        )

    def handle(self, *args: object, **options: Any) -> None:
        dry_run = options["dry_run"]
        projects = Project.objects.order_by("pk")
        if options["project"]:
            projects = projects.filter(slug=options["project"])
            if not projects:
                raise CommandError(f"No project '{options['project']}'.")
        else:
            verb = "would drop" if dry_run else "dropped"
            for name in orphan_partitions_drop(dry_run=dry_run):
                self.stdout.write(f"deleted projects: {verb} {name}")
        total = len(projects)
        for position, project in enumerate(projects, start=1):
            report = event_storage_maintain(project=project, dry_run=dry_run)
            lines = report.lines() or ["nothing to do"]
            self.stdout.write(f"[{position}/{total}] {project.slug}: " + lines[0])
            for line in lines[1:]:
                self.stdout.write(f"    {line}")
