from __future__ import annotations

import logging
import os
import sys

from django.apps import AppConfig

logger = logging.getLogger("executions")

# Commands that start something that serves or runs code: the choice of backend matters there.
SERVING_COMMANDS = {"runserver", "qcluster", "gunicorn"}
# Set by ``manage.py serve`` for the processes it starts: it has announced the backend itself,
# once, and the web server and the cluster need not repeat it.
ANNOUNCED_ENV = "EXECUTION_BACKEND_ANNOUNCED"


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Code execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from executions import checks  # noqa: F401  (registers system checks)

        post_spawn.connect(remove_orphans_at_worker_start, dispatch_uid="executions-janitor")

        command = sys.argv[1] if len(sys.argv) > 1 else sys.argv[0]
        serving = command in SERVING_COMMANDS or "gunicorn" in sys.argv[0]
        if serving and not os.environ.get(ANNOUNCED_ENV):
            self.log_backend_choice()

    @staticmethod
    def log_backend_choice() -> None:
        from django.core.exceptions import ImproperlyConfigured

        from executions.backends import active_selection
        from executions.security import backend_announcement

        try:
            selection = active_selection()
        except ImproperlyConfigured as exc:
            logger.error("Execution backend is misconfigured: %s", exc)
            return
        logger.info("%s", backend_announcement(selection))


def remove_orphans_at_worker_start(**kwargs: object) -> None:
    """A worker that starts may be replacing one that died mid-run and left a sandbox."""
    from executions.services import sandboxes_janitor

    removed = sandboxes_janitor()
    if removed:
        logger.info("Removed %d orphaned sandboxes at worker start.", removed)
