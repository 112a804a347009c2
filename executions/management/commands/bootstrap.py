import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from executions import catalogue, services
from executions.backends import active_selection
from executions.models import Runtime
from sandbox import supervisor

# The runtime a fresh installation offers; `manage.py runtimes` adds the catalogue's others.
DEFAULT_RUNTIME = "python-3.11"


class Command(BaseCommand):
    help = (
        "Prepare a fresh installation: create the admin account (password from ADMIN_PASSWORD, "
        "or generated and printed once) and the default Python runtime, then builds the images of "
        "the enabled runtimes. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        users = get_user_model()
        if not users.objects.filter(username=username).exists():
            password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            users.objects.create_superuser(username=username, email="", password=password)
            if os.environ.get("ADMIN_PASSWORD"):
                self.stdout.write(f"Created admin account {username!r} with ADMIN_PASSWORD.")
            else:
                self.stdout.write(
                    self.style.WARNING(
                        f"Created admin account {username!r} with password: {password}\n"
                        "It is shown only this once."
                    )
                )
        if not Runtime.objects.filter(name=DEFAULT_RUNTIME).exists():
            (outcome,) = services.runtimes_sync([catalogue.ENTRY_BY_NAME[DEFAULT_RUNTIME]])
            self.stdout.write(f"Added runtime {outcome.runtime.name} ({outcome.runtime.image}).")
        self.prepare_backend()

    def prepare_backend(self) -> None:
        # Which backend runs code, and why, is said once by the command that serves.
        if active_selection().name != "docker":
            return
        try:
            # Built here once (a C compiler is needed) rather than by the first run.
            supervisor.binary()
        except supervisor.SupervisorUnavailable as exc:
            self.stdout.write(
                self.style.WARNING(f"{exc}\nRuns will fail with this reason until it is built.")
            )
        try:
            for outcome in services.runtime_images_build(log=self.stdout.write):
                self.stdout.write(str(outcome))
        except services.RuntimeImageBuildFailed as exc:
            self.stdout.write(
                self.style.WARNING(
                    f"Runtime image not ready: {exc}\nRuns will fail with this reason until "
                    "`python manage.py build_runtime_image` succeeds."
                )
            )
