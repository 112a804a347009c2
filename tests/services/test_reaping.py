"""The reaper closes what a dead worker left behind, and never touches live runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import AuditEvent, Execution, Runtime, Status
from executions.services import reaping, running

pytestmark = pytest.mark.django_db


@pytest.fixture
def execution(user: Any, runtime: Runtime) -> Execution:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    return evaluation.executions.get()


def make_running(execution: Execution, *, heartbeat_age_s: float, deadline_in_s: float) -> None:
    now = timezone.now()
    Execution.objects.filter(pk=execution.pk).update(
        status="running",
        started_at=now - timedelta(seconds=heartbeat_age_s),
        heartbeat_at=now - timedelta(seconds=heartbeat_age_s),
        deadline_at=now + timedelta(seconds=deadline_in_s),
        backend_handle=f"evalplatform-{execution.pk}-0",
    )


def test_running_with_a_dead_worker_is_closed(execution: Execution) -> None:
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    report = services.executions_reap()
    execution.refresh_from_db()
    assert report.closed == 1
    assert (execution.status, execution.error_kind) == ("error", "worker_lost")
    assert "stopped responding" in execution.error_message
    assert AuditEvent.objects.filter(action="reap", execution=execution).exists()


def test_running_past_its_deadline_is_closed(execution: Execution) -> None:
    make_running(execution, heartbeat_age_s=1, deadline_in_s=-120)
    services.executions_reap()
    execution.refresh_from_db()
    assert execution.status == "error" and "deadline" in execution.error_message


@pytest.mark.parametrize(
    ("deadline_in_s", "closed"), [(-5, 0), (-25, 0), (-35, 1)], ids=["just", "in-grace", "past"]
)
def test_a_run_just_past_its_deadline_gets_the_grace(
    execution: Execution, settings: Any, deadline_in_s: float, closed: int
) -> None:
    """A worker finishing its last case and writing the result needs a moment past the
    deadline: the reaper waits REAPER_GRACE_S (30 s) after it."""
    settings.EXECUTIONS = {**settings.EXECUTIONS, "REAPER_GRACE_S": 30}
    make_running(execution, heartbeat_age_s=1, deadline_in_s=deadline_in_s)
    assert services.executions_reap().closed == closed
    execution.refresh_from_db()
    assert execution.status == ("error" if closed else "running")


@pytest.mark.parametrize(("heartbeat_age_s", "closed"), [(25, 0), (35, 1)], ids=["recent", "stale"])
def test_only_a_heartbeat_older_than_the_timeout_is_stale(
    execution: Execution, settings: Any, heartbeat_age_s: float, closed: int
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "HEARTBEAT_TIMEOUT_S": 30}
    make_running(execution, heartbeat_age_s=heartbeat_age_s, deadline_in_s=600)
    assert services.executions_reap().closed == closed


def test_a_live_run_is_left_alone(execution: Execution) -> None:
    make_running(execution, heartbeat_age_s=1, deadline_in_s=60)
    assert services.executions_reap().closed == 0
    execution.refresh_from_db()
    assert execution.status == "running"


def test_a_closed_run_cancels_its_sandbox(execution: Execution) -> None:
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    services.executions_reap()
    assert FakeBackend._cancelled[f"evalplatform-{execution.pk}-0"].is_set()


def test_a_late_result_after_reaping_is_discarded(execution: Execution) -> None:
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    services.executions_reap()
    execution.refresh_from_db()
    assert not running._finish(execution, Status.FINISHED, None, verdict="accepted")
    execution.refresh_from_db()
    assert execution.status == "error"


def test_a_queued_run_is_never_closed_however_old(execution: Execution) -> None:
    # Dispatch gives every queued run a task; only a user may give up on it.
    old = timezone.now() - timedelta(days=1)
    Execution.objects.filter(pk=execution.pk).update(heartbeat_at=old, dispatched_at=old)
    assert services.executions_reap().closed == 0
    execution.refresh_from_db()
    assert execution.status == "queued"


def test_a_reaped_run_is_run_again_as_a_new_attempt(
    execution: Execution, django_capture_on_commit_callbacks: Any, monkeypatch: Any, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 2}
    sent: list[int] = []
    monkeypatch.setattr("executions.services.dispatch.execution_dispatch", sent.append)
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.executions_reap().closed == 1
    retry = Execution.objects.get(evaluation=execution.evaluation, attempt=2)
    assert (retry.status, retry.retry_of_id, retry.retry_count) == ("queued", execution.pk, 1)
    assert retry.requested_by is None and retry.backend == execution.backend
    assert sent == [] and retry.dispatched_at is None, "the lane sends it once the backend answers"
    with django_capture_on_commit_callbacks(execute=True):
        assert services.executions_redispatch().sent == 1
    assert sent == [retry.pk]
    event = AuditEvent.objects.get(action="retry")
    assert (event.execution_id, event.detail) == (
        retry.pk,
        {"after": execution.pk, "reason": "worker_lost"},
    )


def test_automatic_re_runs_stop_after_auto_reruns_in_a_row(
    execution: Execution, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 1}
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    services.executions_reap()
    retry = Execution.objects.get(evaluation=execution.evaluation, attempt=2)
    make_running(retry, heartbeat_age_s=120, deadline_in_s=60)
    assert services.executions_reap().closed == 1
    assert list(
        Execution.objects.filter(evaluation=execution.evaluation).values_list("attempt", "status")
    ) == [(2, "error"), (1, "error")]


def test_without_trusted_heartbeats_only_deadlines_count(execution: Execution) -> None:
    # Right after a database outage no worker could beat: a stale heartbeat proves nothing.
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    assert services.executions_reap(trust_heartbeats=False).closed == 0
    make_running(execution, heartbeat_age_s=120, deadline_in_s=-120)
    assert services.executions_reap(trust_heartbeats=False).closed == 1
    execution.refresh_from_db()
    assert "deadline" in execution.error_message


def test_management_command_reports(execution: Execution, capsys: Any) -> None:
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    call_command("reap_executions")
    assert "Closed 1, re-queued 0, removed 0 orphaned sandboxes." in capsys.readouterr().out


def test_a_run_that_ends_while_being_reaped_is_neither_counted_nor_cancelled(
    execution: Execution, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes its result between the reaper's query and its update: the
    conditional update finds nothing to close, and the finished run's sandbox is not
    touched."""
    make_running(execution, heartbeat_age_s=120, deadline_in_s=60)
    real_finish_error = reaping._finish_error

    def worker_wins(target: Execution, *args: Any, **kwargs: Any) -> bool:
        Execution.objects.filter(pk=target.pk).update(status="finished")
        return real_finish_error(target, *args, **kwargs)

    cancelled: list[str] = []
    monkeypatch.setattr(reaping, "_finish_error", worker_wins)
    monkeypatch.setattr(
        reaping, "_cancel_sandbox", lambda backend, handle: cancelled.append(handle)
    )
    assert services.executions_reap().closed == 0
    assert cancelled == []
    execution.refresh_from_db()
    assert execution.status == "finished"
    assert not AuditEvent.objects.filter(action="reap", execution=execution).exists()
