"""``manage.py qcluster``: django-q2's cluster, with the recovery lane beside it.

The lane (``executions.recovery``) runs in this main process while the cluster's processes
run the tasks, so closing abandoned runs and sending lost tasks never waits behind a backlog.
"""

import os
from typing import Any

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as ClusterCommand

from executions.recovery import RecoveryLane


class Command(ClusterCommand):
    help = "Start the task cluster, and beside it the recovery lane."

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("run_once"):
            super().handle(*args, **options)
            return
        settings.SECRET_KEY  # noqa: B018  (signing needs it: fail before starting anything)
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = Cluster()
        cluster.start()
        # SIGTERM and SIGINT stop the cluster (django-q's handlers); the lane stops with it.
        RecoveryLane().run(until=lambda: not cluster.sentinel.is_alive())
