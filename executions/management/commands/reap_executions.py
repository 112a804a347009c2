from typing import Any

from django.core.management.base import BaseCommand

from executions import services


class Command(BaseCommand):
    help = (
        "Close executions whose worker died or whose deadline passed, send the tasks of queued "
        "ones that have none, and remove orphaned sandboxes: one pass of the recovery lane."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.recovery_pass()
        self.stdout.write(
            f"Closed {report.closed}, re-queued {report.requeued}, "
            f"removed {report.orphans_removed} orphaned sandboxes."
        )
