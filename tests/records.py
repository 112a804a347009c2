"""Executions with a chosen history, as the services would have left them, for the tests of
what operators see (the dashboard, the metrics), which read only timestamps and outcomes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User

from executions.models import Evaluation, Execution, Runtime, Status, Verdict


def evaluation_of(user: User, runtime: Runtime) -> Evaluation:
    return Evaluation.objects.create(
        owner=user,
        runtime=runtime,
        files=[{"name": runtime.file_name, "content": "print(1)"}],
        time_limit_ms=1000,
        memory_mb=64,
        output_kb=64,
    )


def record(
    evaluation: Evaluation,
    *,
    status: str,
    queued_at: datetime,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    verdict: str = "",
    error_kind: str = "",
    backend: str = "fake",
) -> Execution:
    """A new attempt of ``evaluation`` with this history."""
    execution = Execution.objects.create(
        evaluation=evaluation,
        attempt=evaluation.executions.count() + 1,
        backend=backend,
        status=status,
        verdict=verdict,
        error_kind=error_kind,
        started_at=started_at,
        finished_at=finished_at,
    )
    Execution.objects.filter(pk=execution.pk).update(queued_at=queued_at)
    return execution


def finished(
    evaluation: Evaluation, end: datetime, *, wait_s: float, run_s: float, **fields: Any
) -> Execution:
    """A run that waited ``wait_s`` in the queue, ran ``run_s`` and ended at ``end``;
    accepted unless ``status`` or ``verdict`` say otherwise."""
    fields.setdefault("status", Status.FINISHED)
    fields.setdefault("verdict", Verdict.ACCEPTED if fields["status"] == Status.FINISHED else "")
    started = end - timedelta(seconds=run_s)
    return record(
        evaluation,
        queued_at=started - timedelta(seconds=wait_s),
        started_at=started,
        finished_at=end,
        **fields,
    )
