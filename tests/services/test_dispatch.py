"""Dispatch: a stored submission always gets a task, whatever the broker did with the first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from executions import services
from executions.models import AuditEvent, Execution, Runtime
from executions.services import dispatch
from tests.services.conftest import latest, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _orm_broker(orm_broker: None) -> None:
    """Whatever the suite runs on, these tests read the tasks back from the ORM broker."""


def tasks_for() -> list[int]:
    """The execution ids of the tasks waiting in the (ORM) broker."""
    from django_q.signing import SignedPackage

    return [SignedPackage.loads(task.payload)["args"][0] for task in OrmQ.objects.order_by("pk")]


def refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr("django_q.tasks.async_task", broker_down)


def test_a_submission_sends_its_task_once_stored(user: Any, runtime: Runtime) -> None:
    execution = latest(submit(user, runtime))
    assert tasks_for() == [execution.pk]
    assert execution.dispatched_at is not None


def test_a_broker_that_refuses_leaves_the_submission_stored_and_unsent(
    user: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    with monkeypatch.context() as down:
        refuse(down)
        execution = latest(submit(user, runtime))
    assert (execution.status, execution.dispatched_at) == ("queued", None)
    assert "did not take the task of execution" in caplog.text
    report = services.executions_redispatch()
    assert (report.sent, report.resent) == (1, 0)
    assert tasks_for() == [execution.pk]
    execution.refresh_from_db()
    assert execution.dispatched_at is not None
    assert services.executions_redispatch() == dispatch.DispatchReport(sent=0, resent=0)


def test_a_lost_task_is_sent_again_once_the_broker_holds_none(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "QUEUED_STALL_S": 10}
    older, newer = latest(submit(user, runtime)), latest(submit(user, runtime))
    sent_long_ago = timezone.now() - timedelta(seconds=60)
    Execution.objects.update(dispatched_at=sent_long_ago)
    # Tasks still wait in the broker: nothing is lost yet, however long they wait.
    assert services.executions_redispatch().resent == 0
    OrmQ.objects.all().delete()  # a cluster died holding them, or the broker restarted empty
    assert services.executions_redispatch().resent == 2
    assert tasks_for() == [older.pk, newer.pk]
    assert set(Execution.objects.values_list("requeue_count", flat=True)) == {1}
    assert AuditEvent.objects.filter(action="requeue").count() == 2
    # Sent just now: not lost again before QUEUED_STALL_S.
    OrmQ.objects.all().delete()
    assert services.executions_redispatch().resent == 0


def test_any_task_runs_the_oldest_queued_execution(user: Any, runtime: Runtime) -> None:
    first, second = latest(submit(user, runtime)), latest(submit(user, runtime))
    services.execution_run(second.pk)  # the second's task, delivered first
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("finished", "queued")
    services.execution_run(first.pk)
    second.refresh_from_db()
    assert second.status == "finished"
    services.execution_run(first.pk)  # a task too many: nothing queued, nothing happens
    assert Execution.objects.filter(status="finished").count() == 2


def test_a_cancelled_execution_is_not_sent(user: Any, runtime: Runtime) -> None:
    execution = latest(submit(user, runtime))
    Execution.objects.update(dispatched_at=None)
    services.execution_cancel(user=user, execution=execution)
    assert services.executions_redispatch().sent == 0
