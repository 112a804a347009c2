"""The reaper: closes abandoned runs and removes orphaned sandboxes.

A run is abandoned when its worker stopped beating or its deadline long passed. The reaper
ends runs through the same conditional update as the worker, so a run the worker finishes
meanwhile is neither counted nor cancelled; a run it closes is re-run automatically
(``running._retry``). Queued runs are never closed here: ``dispatch`` makes sure each has a
task. The recovery lane (``executions.recovery``) calls these every few seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from executions import budget
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.models import AuditEvent, ClusterBeat, Execution, Status
from executions.services.dispatch import executions_redispatch
from executions.services.running import _cancel_sandbox, _finish_error
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
    requeued: int = 0
    orphans_removed: int = 0


def _reap(execution: Execution, reason: str, *, from_status: Status) -> bool:
    """Close an abandoned execution as an infrastructure error, and record that. It is then
    re-run automatically, like any run the infrastructure interrupted."""
    if not _finish_error(execution, ErrorKind.WORKER_LOST, reason, from_status=from_status):
        return False
    logger.warning(
        "Execution %s closed by the reaper: %s",
        execution.pk,
        reason,
        extra={"execution_id": execution.pk},
    )
    AuditEvent.objects.create(
        action=AuditEvent.Action.REAP,
        evaluation_id=execution.evaluation_id,
        execution=execution,
        detail={"reason": reason, "worker": execution.worker},
    )
    return True


def executions_reap(*, trust_heartbeats: bool = True) -> ReapReport:
    """Close running executions whose worker is gone (no heartbeat for
    ``HEARTBEAT_TIMEOUT_S``) or whose deadline has long passed, and remove their sandboxes.

    ``trust_heartbeats=False`` judges deadlines only: right after a database outage, when no
    worker could write a heartbeat, a missing one proves nothing."""
    now = timezone.now()
    grace = timedelta(seconds=execution_settings.REAPER_GRACE_S)
    stale = now - timedelta(seconds=execution_settings.HEARTBEAT_TIMEOUT_S)
    closed = 0
    abandoned = Q(deadline_at__lt=now - grace)
    if trust_heartbeats:
        abandoned |= Q(heartbeat_at__lt=stale)
    lost = Execution.objects.filter(status=Status.RUNNING).filter(abandoned)
    for execution in lost:
        reason = (
            f"The worker running this ({execution.worker or 'unknown'}) stopped responding "
            f"(no heartbeat since {execution.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); the run "
            "was abandoned."
            if trust_heartbeats and execution.heartbeat_at and execution.heartbeat_at < stale
            else "The run went past its deadline and was abandoned."
        )
        if _reap(execution, reason, from_status=Status.RUNNING):
            closed += 1
            if execution.backend_handle:
                _cancel_sandbox(execution.backend, execution.backend_handle)
    return ReapReport(closed=closed)


# How long beats are kept: a cluster gone this long is history.
BEATS_KEPT = timedelta(days=1)


def cluster_beat(name: str, *, started_at: datetime) -> None:
    """Note that the cluster ``name`` (its recovery lane) is alive now."""
    now = timezone.now()
    if not ClusterBeat.objects.filter(name=name).update(beat_at=now):
        ClusterBeat.objects.create(name=name, started_at=started_at, beat_at=now)


def cluster_gone(name: str) -> None:
    """Forget the cluster ``name``, which stopped cleanly."""
    ClusterBeat.objects.filter(name=name).delete()


def cluster_beats_prune() -> int:
    """Forget clusters silent for ``BEATS_KEPT``; returns how many."""
    return ClusterBeat.objects.filter(beat_at__lt=timezone.now() - BEATS_KEPT).delete()[0]


def recovery_pass() -> ReapReport:
    """One pass of everything the recovery lane does, for ``manage.py reap_executions``:
    close abandoned runs, send the tasks of queued runs that have none, remove orphans."""
    closed = executions_reap().closed
    dispatched = executions_redispatch()
    return ReapReport(
        closed=closed,
        requeued=dispatched.sent + dispatched.resent,
        orphans_removed=sandboxes_janitor(),
    )
