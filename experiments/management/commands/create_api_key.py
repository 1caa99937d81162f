"""Create an API key for a project and print only its secret, on one line."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import DomainError
from experiments.models import ApiKeyScope, Project
from experiments.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key; prints only the secret (shown once, stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--scopes",
            default="assign,ingest,read",
            help=f"comma-separated, of {', '.join(ApiKeyScope.values)}",
        )
        parser.add_argument("--name", default="cli")
        parser.add_argument(
            "--environment", default="production", help="environment key (default production)"
        )

    def handle(self, *args: object, **options: str) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project '{options['project']}'.")
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            created = api_key_create(
                project=project,
                name=options["name"],
                scopes=scopes,
                environment=options["environment"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(created.secret)
