"""The reaper: closes abandoned runs, re-queues stalled ones, removes orphaned sandboxes.

A run is abandoned when its worker stopped beating or its deadline long passed; a queued run
no worker picked up is re-queued once, then closed. The reaper ends runs through the same
conditional update as the worker, so a run the worker finishes meanwhile is neither counted
nor cancelled.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from executions import budget
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.models import AuditEvent, Execution, Status
from executions.services.running import _cancel_sandbox, _finish_error
from executions.services.submission import _enqueue
from sandbox.contract import ErrorKind

logger = logging.getLogger(__name__)


def sandboxes_janitor() -> int:
    """Remove sandboxes that crashed workers left on the active backend. Never raises."""
    try:
        return get_backend().remove_orphans(budget.orphan_age_s())
    except Exception:
        logger.exception("Could not remove orphaned sandboxes")
        return 0


@dataclass(frozen=True)
class ReapReport:
    closed: int
    requeued: int
    orphans_removed: int = 0


def _reap(execution: Execution, reason: str, *, from_status: Status) -> bool:
    """Close an abandoned execution as an infrastructure error, and record that."""
    if not _finish_error(execution, ErrorKind.WORKER_LOST, reason, from_status=from_status):
        return False
    AuditEvent.objects.create(
        action=AuditEvent.Action.REAP,
        evaluation_id=execution.evaluation_id,
        execution=execution,
        detail={"reason": reason},
    )
    return True


def executions_reap() -> ReapReport:
    """Close running executions whose worker is gone or whose deadline has long passed, and
    re-queue (once) queued executions that no worker picked up; close those after that."""
    now = timezone.now()
    grace = timedelta(seconds=execution_settings.REAPER_GRACE_S)
    stale = now - timedelta(seconds=execution_settings.HEARTBEAT_TIMEOUT_S)
    closed = 0
    lost = Execution.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(deadline_at__lt=now - grace)
    )
    for execution in lost:
        reason = (
            "The worker running this stopped responding (no heartbeat since "
            f"{execution.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); the run was abandoned."
            if execution.heartbeat_at and execution.heartbeat_at < stale
            else "The run went past its deadline and was abandoned."
        )
        if _reap(execution, reason, from_status=Status.RUNNING):
            closed += 1
            if execution.backend_handle:
                _cancel_sandbox(execution.backend, execution.backend_handle)

    requeued = 0
    stalled = Execution.objects.filter(
        status=Status.QUEUED,
        heartbeat_at__lt=now - timedelta(seconds=execution_settings.QUEUED_STALL_S),
    ).select_related("evaluation__runtime")
    for execution in stalled:
        if execution.requeue_count < execution_settings.MAX_REQUEUES:
            with transaction.atomic():
                touched = Execution.objects.filter(
                    pk=execution.pk, status=Status.QUEUED, requeue_count=execution.requeue_count
                ).update(requeue_count=execution.requeue_count + 1, heartbeat_at=now)
                if touched:
                    requeued += 1
                    AuditEvent.objects.create(
                        action=AuditEvent.Action.REQUEUE,
                        evaluation_id=execution.evaluation_id,
                        execution=execution,
                    )
                    timeout = budget.task_timeout_s(execution.evaluation, backend=execution.backend)
                    transaction.on_commit(functools.partial(_enqueue, execution.pk, timeout))
            continue
        reason = (
            "No worker picked this run up; "
            "check that the task cluster (manage.py qcluster) is running."
        )
        if _reap(execution, reason, from_status=Status.QUEUED):
            closed += 1
    return ReapReport(closed=closed, requeued=requeued, orphans_removed=sandboxes_janitor())
