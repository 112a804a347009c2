"""Dispatch: the database says what must run; the broker only wakes workers up.

A stored execution is queued before its task exists: the task is handed to the broker once
the submission commits, and ``dispatched_at`` says when. A task is a wake-up, not a claim on
one execution: a worker that takes any task runs the oldest queued execution
(``running.execution_run``), so tasks are interchangeable and a lost one costs nothing but
itself. The recovery lane calls ``executions_redispatch`` every few seconds: it sends what was
never sent (the broker was down at submit) and, when the broker holds no task, sends again
for queued executions whose task went out long ago (a cluster that died with tasks in hand,
a broker restarted empty). A task too many finds nothing queued and ends at once.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from executions.conf import execution_settings
from executions.models import AuditEvent, Evaluation, Execution, Status
from executions.outages import RateLimitedLog

logger = logging.getLogger(__name__)
_broker_down = RateLimitedLog(logger, every_s=30)

# How many executions one pass sends at most: a pass must stay short.
BATCH = 200


def execution_dispatch(execution_id: int) -> bool:
    """Hand a task for ``execution_id`` to the broker; False (logged) if the broker refused.
    Safe to call again: a task with nothing queued to run ends at once."""
    from django_q.tasks import async_task

    try:
        async_task(
            "executions.tasks.run_execution", execution_id, task_name=f"execution-{execution_id}"
        )
    except Exception as exc:
        _broker_down.warning(
            "The broker did not take the task of execution %s (%s: %s); the recovery lane "
            "sends it when the broker is back.",
            execution_id,
            type(exc).__name__,
            exc,
        )
        Execution.objects.filter(pk=execution_id, status=Status.QUEUED).update(dispatched_at=None)
        return False
    return True


def queue_attempt(
    evaluation: Evaluation,
    *,
    user: User | AnonymousUser | None,
    backend: str,
    retry_of: Execution | None = None,
) -> Execution:
    """Add the next attempt of ``evaluation``, queued, and send its task once the surrounding
    transaction commits. The caller holds the evaluation's row lock (attempt numbers).

    An automatic re-run (``retry_of``) is not sent here: the recovery lane sends it once the
    backend answers, so a re-run of a run the backend failed waits for it instead of failing
    again at once (an engine restarting, say)."""
    last = evaluation.executions.aggregate(last=Max("attempt"))["last"] or 0
    now = timezone.now()
    execution = Execution.objects.create(
        evaluation=evaluation,
        attempt=last + 1,
        requested_by=user if isinstance(user, User) else None,
        backend=backend,
        heartbeat_at=now,
        # Sent once the transaction commits; a broker that refuses it clears this, and the
        # recovery lane sends it later. Stored either way: never an error after the commit.
        dispatched_at=now if retry_of is None else None,
        retry_of=retry_of,
        retry_count=retry_of.retry_count + 1 if retry_of is not None else 0,
    )
    if retry_of is None:
        transaction.on_commit(functools.partial(execution_dispatch, execution.pk))
    return execution


def broker_queue_size() -> int | None:
    """Tasks waiting in the broker, or None when it cannot say (it is down)."""
    from django_q.brokers import get_broker

    try:
        return int(get_broker().queue_size() or 0)
    except Exception as exc:
        _broker_down.warning("The broker cannot be reached (%s: %s).", type(exc).__name__, exc)
        return None


@dataclass(frozen=True)
class DispatchReport:
    sent: int  # never sent before
    resent: int  # sent again: their task was presumed lost


def executions_redispatch() -> DispatchReport:
    """Send the tasks of queued executions that have none: those never sent, and, while the
    broker holds no task at all, those sent over ``QUEUED_STALL_S`` ago."""
    queued = Execution.objects.filter(status=Status.QUEUED)
    never_sent = list(
        queued.filter(dispatched_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH]
    )
    sent = sum(_send(pk, resend=False) for pk in never_sent)
    resent = 0
    stale = timezone.now() - timedelta(seconds=execution_settings.QUEUED_STALL_S)
    overdue = queued.filter(dispatched_at__lt=stale)
    if overdue.exists() and broker_queue_size() == 0:
        for pk in overdue.order_by("pk").values_list("pk", flat=True)[:BATCH]:
            resent += _send(pk, resend=True)
    return DispatchReport(sent=sent, resent=resent)


def _send(execution_id: int, *, resend: bool) -> bool:
    # Marked first, sent once that commits: a worker that takes the task at once must not
    # see it as never sent, and a broker that refuses it clears the mark again.
    marked = Execution.objects.filter(pk=execution_id, status=Status.QUEUED).filter(
        Q(dispatched_at__isnull=True) if not resend else Q(dispatched_at__isnull=False)
    )
    updates: dict[str, object] = {"dispatched_at": timezone.now()}
    if resend:
        updates["requeue_count"] = F("requeue_count") + 1
    if not marked.update(**updates):
        return False
    transaction.on_commit(functools.partial(execution_dispatch, execution_id))
    if resend:
        logger.warning(
            "Execution %s re-queued: its task was lost (queued, sent over %s s ago, and the "
            "broker holds no task).",
            execution_id,
            execution_settings.QUEUED_STALL_S,
            extra={"execution_id": execution_id},
        )
        AuditEvent.objects.create(
            action=AuditEvent.Action.REQUEUE,
            evaluation_id=Execution.objects.filter(pk=execution_id)
            .values_list("evaluation_id", flat=True)
            .get(),
            execution_id=execution_id,
            detail={"reason": "task lost"},
        )
    else:
        logger.info(
            "Execution %s sent to the broker: its task was held back (the broker was down when "
            "it was stored, or its backend could not start it).",
            execution_id,
            extra={"execution_id": execution_id},
        )
    return True
