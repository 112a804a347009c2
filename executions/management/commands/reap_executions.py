from typing import Any

from django.core.management.base import BaseCommand

from executions import services


class Command(BaseCommand):
    help = (
        "Close executions whose worker died or whose deadline passed; re-queue stalled ones once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.executions_reap()
        self.stdout.write(
            f"Closed {report.closed}, re-queued {report.requeued}, "
            f"removed {report.orphans_removed} orphaned sandboxes."
        )
