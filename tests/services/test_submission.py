"""Submit, cancel and re-run through the services, on the real database."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import AuditEvent, Execution, Runtime
from tests.services.conftest import fake, latest, submit

pytestmark = pytest.mark.django_db


def test_submit_stores_evaluation_and_queues_first_execution(
    user: Any, runtime: Runtime, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        evaluation = submit(user, runtime, stdin="5\n", title="Sum")
    execution = latest(evaluation)
    assert evaluation.files == [{"name": "main.py", "content": "print('hello')\n"}]
    assert (evaluation.time_limit_ms, evaluation.memory_mb, evaluation.output_kb) == (5000, 256, 64)
    assert execution.status == "queued" and execution.attempt == 1 and execution.backend == "fake"
    assert AuditEvent.objects.get().action == "submit"
    assert len(callbacks) == 1, "the run is enqueued once, after the transaction commits"


# Cancelling and re-running --------------------------------------------------------------


def test_cancel_a_queued_execution(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime)
    execution = latest(evaluation)
    assert services.execution_cancel(user=user, execution=execution)
    assert not services.execution_cancel(user=user, execution=execution), "ends only once"
    services.execution_run(execution.pk)
    assert FakeBackend.runs == []
    execution.refresh_from_db()
    assert execution.status == "cancelled" and execution.finished_at
    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("id")) == [
        "submit",
        "cancel",
    ]


@pytest.mark.django_db(transaction=True)
def test_cancel_a_running_execution_stops_the_sandbox(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, source=fake(delay=30))
    execution = latest(evaluation)

    def work() -> None:
        try:
            services.execution_run(execution.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 10
    while (
        not Execution.objects.filter(pk=execution.pk, status="running")
        .exclude(backend_handle="")
        .exists()
    ):
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)
    started = time.monotonic()
    assert services.execution_cancel(user=user, execution=execution)
    worker.join(timeout=5)
    assert not worker.is_alive() and time.monotonic() - started < 5
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.verdict == "" and execution.error_kind == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_cancel_while_compiling_stops_the_compile_step(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(
        user, compiling_runtime, source=fake(compile_delay=30), test_cases=[{"stdin": "1"}]
    )
    execution = latest(evaluation)

    def work() -> None:
        try:
            services.execution_run(execution.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 10
    while (
        not Execution.objects.filter(pk=execution.pk, status="running")
        .exclude(backend_handle="")
        .exists()
    ):
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)
    assert services.execution_cancel(user=user, execution=execution)
    worker.join(timeout=5)
    assert not worker.is_alive()
    execution.refresh_from_db()
    assert (execution.status, execution.verdict) == ("cancelled", "")
    assert execution.compile_status == "" and FakeBackend.runs == []


def test_rerun_adds_an_attempt_and_keeps_history(user: Any, staff: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, source=fake(exit_code=1))
    services.execution_run(latest(evaluation).pk)
    second = services.execution_rerun(user=staff, evaluation=evaluation, backend="disabled")
    assert (second.attempt, second.backend, second.status) == (2, "disabled", "queued")
    services.execution_run(second.pk)
    first, second = evaluation.executions.order_by("attempt")
    assert (first.status, first.verdict) == ("finished", "runtime_error")
    assert second.status == "refused"
    assert AuditEvent.objects.filter(action="rerun", actor=staff, execution=second).exists()


def test_rerun_on_an_unknown_backend_is_refused(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime)
    with pytest.raises(ValidationError) as error:
        services.execution_rerun(user=user, evaluation=evaluation, backend="teleport")
    assert "backend" in error.value.message_dict
    assert evaluation.executions.count() == 1
