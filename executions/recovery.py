"""The recovery lane: a loop beside the task queue, in the main process of every cluster.

Recovery must not wait behind queued runs, so it is not a task: ``manage.py qcluster`` runs
this loop next to the cluster it starts. Every ``RECOVERY_INTERVAL_S`` it

* closes runs whose worker stopped beating or whose deadline long passed
  (``services.executions_reap``), which re-runs them automatically. Right after a database
  outage it judges deadlines only, for one heartbeat timeout: no worker could beat meanwhile,
  and the workers are writing what they kept;
* sends the tasks of queued runs that have none (``services.executions_redispatch``), unless
  the active backend does not answer: dispatch pauses while, say, a Docker engine restarts,
  and the runs wait queued instead of failing;
* removes orphaned sandboxes every ``JANITOR_EVERY_S`` and as soon as the backend answers
  again after it did not;
* notes that its cluster is alive (``ClusterBeat``), which health pages and metrics read.

A pass that fails (the database is down) is logged, rate-limited, and tried at the next tick.
Several clusters may each run a lane: every change it makes is a conditional update.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError
from django.utils import timezone

from executions import services
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.outages import RateLimitedLog, close_broken_connections

logger = logging.getLogger(__name__)

JANITOR_EVERY_S = 60.0


class RecoveryLane:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, name: str | None = None
    ) -> None:
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = timezone.now()
        self.database_down = False
        self.heartbeats_trusted_at = 0.0  # when heartbeats may be judged again
        self.backend_down = False
        self.janitor_at = 0.0
        self._database_log = RateLimitedLog(logger, every_s=30)
        self._backend_log = RateLimitedLog(logger, every_s=30)

    def run(self, stop: threading.Event | None = None, until: Callable[[], bool] = bool) -> None:
        """Tick every ``RECOVERY_INTERVAL_S`` until ``until()`` is true or ``stop`` is set."""
        stop = stop or threading.Event()
        logger.info(
            "Recovery lane started: every %s s it closes abandoned runs, sends lost tasks and "
            "removes orphaned sandboxes.",
            execution_settings.RECOVERY_INTERVAL_S,
        )
        while not (stop.is_set() or until()):
            self.tick()
            stop.wait(execution_settings.RECOVERY_INTERVAL_S)
        with contextlib.suppress(Exception):
            services.cluster_gone(self.name)

    def tick(self) -> None:
        try:
            self._pass()
        except DatabaseError as exc:
            close_broken_connections()
            self.database_down = True
            self._database_log.warning(
                "Recovery lane: the database does not answer (%s); trying again every %s s.",
                exc,
                execution_settings.RECOVERY_INTERVAL_S,
            )
        except Exception:
            logger.exception("Recovery lane: a pass failed")

    def _pass(self) -> None:
        now = self.clock()
        services.cluster_beat(self.name, started_at=self.started_at)
        trusted = not self.database_down and now >= self.heartbeats_trusted_at
        services.executions_reap(trust_heartbeats=trusted)
        if self.database_down:  # and it answered just now
            self.database_down = False
            self.heartbeats_trusted_at = now + execution_settings.HEARTBEAT_TIMEOUT_S
            logger.warning(
                "Recovery lane: the database answers again; runs are judged by their deadlines "
                "only for the next %s s, while workers catch up on their heartbeats.",
                execution_settings.HEARTBEAT_TIMEOUT_S,
            )
        if not self._backend_answers():
            return
        services.executions_redispatch()
        if now >= self.janitor_at:
            self.janitor_at = now + JANITOR_EVERY_S
            services.sandboxes_janitor()
            services.cluster_beats_prune()

    def _backend_answers(self) -> bool:
        try:
            health = get_backend().health()
            ok, detail = health.ok, health.detail
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self.backend_down = True
            self._backend_log.warning(
                "Recovery lane: the execution backend does not answer (%s); queued runs wait "
                "for it.",
                detail,
            )
            return False
        if self.backend_down:
            self.backend_down = False
            self.janitor_at = 0.0  # what it could not remove while down goes now
            logger.warning("Recovery lane: the execution backend answers again.")
        return True
