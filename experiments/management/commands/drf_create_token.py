"""Make (or revoke) a person's API token: `Authorization: Token <key>` in scripts.

The name and the positional user are those of Django REST framework's command, which abacus
documented before tokens were stored hashed. The token is printed once: abacus keeps only a
digest (django-rest-knox), so it cannot be shown again; make a new one if it is lost.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.services import user_token_create, user_tokens_revoke


class Command(BaseCommand):
    help = "Print a new API token for a user (shown once; expires), or revoke their tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "-r",
            "--reset",
            action="store_true",
            help="revoke the user's existing tokens before making the new one",
        )
        parser.add_argument(
            "--revoke", action="store_true", help="revoke all the user's tokens; make none"
        )

    def handle(self, *args: Any, **o: Any) -> None:
        user = get_user_model().objects.filter(username=o["username"]).first()
        if user is None:
            raise CommandError(f"There is no user '{o['username']}'.")
        if o["revoke"] or o["reset"]:
            count = user_tokens_revoke(user=user)
            self.stderr.write(f"Revoked {count} token(s) of {user.get_username()}.")
            if o["revoke"]:
                return
        created = user_token_create(user=user)
        expiry = created.expiry.isoformat() if created.expiry else "never"
        self.stderr.write(
            f"Token for {user.get_username()} (expires {expiry}); it is shown only this once:"
        )
        self.stdout.write(created.token)
