"""``manage.py api_token create|revoke USERNAME``: the API token of a user.

``create`` prints the user's token, making one if there is none (run it again to see the
same token); with ``--create-user`` a missing user is made first, as an ordinary account with
no password (it signs in with the token only). ``revoke`` deletes the token, so requests made
with it get 401 from then on.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create (or show) or revoke the API token of a user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["create", "revoke"])
        parser.add_argument("username")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="create: make the user first if there is none (no password, not staff)",
        )

    def handle(
        self, *args: Any, action: str, username: str, create_user: bool, **options: Any
    ) -> None:
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is None and action == "create" and create_user:
            user = users.objects.create_user(username=username, password=None)
            self.stderr.write(f"Created user {username!r} (no password; the token signs in).")
        if user is None:
            hint = " Add --create-user to make one." if action == "create" else ""
            raise CommandError(f"No user named {username!r}.{hint}")
        if action == "create":
            token, _ = Token.objects.get_or_create(user=user)
            self.stdout.write(token.key)
            return
        deleted, _ = Token.objects.filter(user=user).delete()
        if not deleted:
            raise CommandError(f"{username!r} has no API token.")
        self.stdout.write(f"Revoked the API token of {username}.")
