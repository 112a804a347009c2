import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand

from executions.apps import ANNOUNCED_ENV
from executions.backends import active_selection
from executions.security import backend_announcement


class Command(BaseCommand):
    help = "Run the web server and the django-q2 cluster together; Ctrl-C stops both."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))

    def handle(self, *args: Any, port: str, host: str, **options: Any) -> None:
        manage = [sys.executable, "manage.py"]
        self.announce_backend()
        environ = {**os.environ, ANNOUNCED_ENV: "1"}
        # Each child gets a session of its own: Ctrl-C reaches only this process, which then
        # stops each child through its main process (a cluster signalled as a whole group
        # can hang while stopping).
        children = [
            subprocess.Popen([*manage, "qcluster"], start_new_session=True, env=environ),
            subprocess.Popen(
                [*manage, "runserver", "--noreload", f"{host}:{port}"],
                start_new_session=True,
                env=environ,
            ),
        ]
        self.stdout.write(
            f"Serving on http://{host}:{port}/ with the task cluster. Ctrl-C stops both."
        )
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        failed = [
            child.args for child in children if child.returncode not in (0, -signal.SIGTERM, None)
        ]
        if failed and not stopping:
            raise SystemExit(f"A process stopped unexpectedly: {failed}")

    def announce_backend(self) -> None:
        try:
            selection = active_selection()
        except ImproperlyConfigured as exc:
            self.stderr.write(f"Execution backend is misconfigured: {exc}")
            return
        self.stdout.write(backend_announcement(selection))
