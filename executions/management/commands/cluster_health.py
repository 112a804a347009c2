"""``manage.py cluster_health``: exit 0 while a cluster on this host is alive.

A worker container's health check: the recovery lane of each ``manage.py qcluster`` notes its
cluster alive every few seconds (``ClusterBeat``), so a cluster that hangs or died fails this.
"""

import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions import operations


class Command(BaseCommand):
    help = "Exit 0 if a worker cluster on this host beat recently, 1 otherwise."

    def handle(self, *args: Any, **options: Any) -> None:
        host = socket.gethostname()
        alive = [beat for beat in operations.live_clusters() if beat.name.startswith(f"{host}:")]
        if not alive:
            raise CommandError(
                f"No cluster on {host} beat in the last {operations.cluster_silence().seconds} s."
            )
        self.stdout.write(", ".join(beat.name for beat in alive) + " alive.")
