"""Submit, run, cancel and re-run through the services, on the real database."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from executions import budget, services
from executions.backends.fake import FakeBackend
from executions.models import AuditEvent, Evaluation, Execution, Runtime
from executions.models import TestCase as Case
from executions.models import TestResult as CaseResult
from sandbox.contract import ExecutionBackend, Isolation, RunRequest, RunResult

pytestmark = pytest.mark.django_db


def fake(**spec: Any) -> str:
    """A program whose outcome the fake backend reads from its directive line."""
    return f"# fake: {json.dumps(spec)}\nprint('hello')\n"


def submit(user: Any, runtime: Runtime, **kwargs: Any) -> Evaluation:
    kwargs.setdefault("source", "print('hello')\n")
    return services.evaluation_submit(user=user, runtime=runtime, **kwargs)


def latest(evaluation: Evaluation) -> Execution:
    return evaluation.executions.order_by("-attempt").first()  # type: ignore[return-value]


def nothing_stored() -> bool:
    return not (
        Evaluation.objects.exists()
        or Execution.objects.exists()
        or Case.objects.exists()
        or AuditEvent.objects.exists()
    )


# Submitting -----------------------------------------------------------------------------


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


def test_submit_puts_the_main_file_first(user: Any, runtime: Runtime) -> None:
    files = [
        {"name": "helper.py", "content": "X = 1\n"},
        {"name": "main.py", "content": "import helper\n"},
    ]
    evaluation = services.evaluation_submit(user=user, runtime=runtime, files=files)
    assert [f["name"] for f in evaluation.files] == ["main.py", "helper.py"]


BIG = "x" * (64 * 1024 + 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"runtime": "cobol-85"}, "runtime"),
        ({"runtime": None}, "runtime"),
        ({"source": ""}, "source"),
        ({"source": "   \n"}, "source"),
        ({"source": BIG}, "source"),
        ({"source": "print(1)\x00"}, "source"),
        ({"source": b"print('\xff')"}, "source"),
        ({"source": "print('\udcff')"}, "source"),
        ({"stdin": "a\x00b"}, "stdin"),
        ({"stdin": b"\xc3\x28"}, "stdin"),
        ({"stdin": "x" * (1024 * 1024 + 1)}, "stdin"),
        ({"time_limit_ms": 10_001}, "time_limit_ms"),
        ({"time_limit_ms": 0}, "time_limit_ms"),
        ({"time_limit_ms": "soon"}, "time_limit_ms"),
        ({"memory_mb": 513}, "memory_mb"),
        ({"output_kb": 4096}, "output_kb"),
        ({"test_cases": [{"stdin": "1"}] * 51}, "test_cases"),
        ({"test_cases": [{"comparison": "fuzzy"}]}, "test_cases[0].comparison"),
        ({"test_cases": [{"weight": 0}]}, "test_cases[0].weight"),
        ({"test_cases": [{"tolerance": -1}]}, "test_cases[0].tolerance"),
        ({"test_cases": [{"expected_output": "\x00"}]}, "test_cases[0].expected_output"),
        ({"test_cases": [{"colour": "red"}]}, "test_cases[0]"),
        ({"source": None, "files": []}, "files"),
        ({"source": None, "files": [{"name": "a.py", "content": "1"}] * 17}, "files"),
        ({"source": None, "files": [{"name": "../main.py", "content": "1"}]}, "files[0].name"),
        ({"source": None, "files": [{"name": "util.py", "content": "1"}]}, "files"),
        (
            {"source": None, "files": [{"name": "main.py", "content": "1"}] * 2},
            "files",
        ),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    user: Any, runtime: Runtime, kwargs: dict[str, Any], field: str
) -> None:
    kwargs.setdefault("runtime", runtime)
    kwargs.setdefault("source", "print(1)\n")
    with pytest.raises(ValidationError) as error:
        services.evaluation_submit(user=user, **kwargs)
    assert field in error.value.message_dict, error.value.message_dict
    assert nothing_stored()


def test_disabled_runtime_is_refused(user: Any, runtime: Runtime) -> None:
    runtime.enabled = False
    runtime.save()
    with pytest.raises(ValidationError) as error:
        submit(user, runtime)
    assert error.value.message_dict == {"runtime": ["Runtime 'python-3.11' is disabled."]}


def test_every_bad_field_is_reported_at_once(user: Any, runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as error:
        submit(user, runtime, source="", stdin="\x00", memory_mb=100_000)
    assert set(error.value.message_dict) == {"source", "stdin", "memory_mb"}


# Running --------------------------------------------------------------------------------


def test_run_without_test_cases_records_output(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, stdin="echo me\n")
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "finished"
    assert execution.verdict == "accepted"
    assert bytes(execution.stdout) == b"echo me\n"
    assert execution.exit_code == 0 and execution.score is None
    assert execution.started_at and execution.finished_at and execution.wall_time_ms is not None


def test_run_with_test_cases_scores_each_in_its_own_sandbox(user: Any, runtime: Runtime) -> None:
    evaluation = submit(
        user,
        runtime,
        test_cases=[
            {"stdin": "1\n", "expected_output": "1", "weight": 2},
            {"stdin": "2\n", "expected_output": "3", "weight": 1, "hidden": True},
            {"stdin": "2.0000001", "expected_output": "2", "comparison": "numeric"},
        ],
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    verdicts = list(
        execution.results.order_by("test_case__position").values_list("verdict", flat=True)
    )
    assert verdicts == ["accepted", "wrong_answer", "accepted"]
    assert execution.verdict == "wrong_answer"
    assert execution.score == Decimal("75.00")
    handles = [request.handle for request in FakeBackend.runs]
    assert len(set(handles)) == 3, "each test case runs in a fresh sandbox"
    assert [request.stdin for request in FakeBackend.runs] == [b"1\n", b"2\n", b"2.0000001"]


@pytest.mark.parametrize(
    ("spec", "verdict"),
    [
        ({"exit_code": 3}, "runtime_error"),
        ({"signal": 9}, "runtime_error"),
        ({"timed_out": True, "exit_code": 137}, "time_limit"),
        ({"oom_killed": True, "exit_code": 137}, "memory_limit"),
        ({"stdout": "y", "repeat": 70_000}, "output_limit"),
    ],
)
def test_verdicts_from_run_outcomes(
    user: Any, runtime: Runtime, spec: dict[str, Any], verdict: str
) -> None:
    evaluation = submit(user, runtime, source=fake(**spec))
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("finished", verdict)


def test_output_is_capped_at_the_output_limit(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, source=fake(stdout="y", repeat=70_000), output_kb=1)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert len(bytes(execution.stdout)) == 1024 and execution.stdout_truncated


class HostileOutputBackend(ExecutionBackend):
    """Prints what a hostile program could: NUL, invalid UTF-8, markup."""

    name = "hostile-output"
    OUTPUT = b"a\x00b\xff\xfe<script>alert(1)</script>\xc3\x28"

    def run(self, request: RunRequest) -> RunResult:
        return RunResult(exit_code=0, stdout=self.OUTPUT, stderr=self.OUTPUT, handle=request.handle)

    def describe(self) -> Isolation:
        return Isolation(summary="", trusts="", escape_impact="")


def test_nul_bytes_and_invalid_utf8_in_output_are_stored_exactly(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.test_services.HostileOutputBackend",
    }
    evaluation = submit(user, runtime)
    services.execution_run(latest(evaluation).pk)
    execution = Execution.objects.get(evaluation=evaluation)
    assert bytes(execution.stdout) == HostileOutputBackend.OUTPUT
    assert bytes(execution.stderr) == HostileOutputBackend.OUTPUT
    assert execution.stdout_text == "a\u2400b\ufffd\ufffd<script>alert(1)</script>\ufffd("


def test_a_task_delivered_twice_runs_once(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime)
    execution_id = latest(evaluation).pk
    services.execution_run(execution_id)
    services.execution_run(execution_id)
    assert len(FakeBackend.runs) == 1
    assert latest(evaluation).status == "finished"


def test_refused_by_the_disabled_backend(user: Any, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    evaluation = submit(user, runtime)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "refused" and execution.verdict == ""
    assert "Code execution is disabled" in execution.error_message
    assert "the security page names it" in execution.error_message


def test_infrastructure_failure_is_its_own_status(user: Any, runtime: Runtime) -> None:
    evaluation = submit(
        user, runtime, source=fake(error_kind="unavailable", error_message="engine down")
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("error", "internal_error")
    assert (execution.error_kind, execution.error_message) == ("unavailable", "engine down")


class ExplodingBackend(HostileOutputBackend):
    def run(self, request: RunRequest) -> RunResult:
        raise RuntimeError("kaboom")


def test_a_backend_that_raises_is_contained(user: Any, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "tests.test_services.ExplodingBackend"}
    evaluation = submit(user, runtime)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "error"
    assert "RuntimeError: kaboom" in execution.error_message


def test_an_unknown_backend_ends_in_error(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime)
    Execution.objects.filter(evaluation=evaluation).update(backend="nonexistent")
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "error" and "nonexistent" in execution.error_message


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


def test_task_timeout_follows_the_runtime_maximum(user: Any, runtime: Runtime) -> None:
    evaluation = submit(user, runtime, test_cases=[{"stdin": "1"}, {"stdin": "2"}])
    # Two runs, each up to the runtime's 10 s cap plus overhead, plus the reaper's grace.
    assert budget.task_timeout_s(evaluation) == 2 * (10 + budget.RUN_OVERHEAD_S) + 30
    assert CaseResult.objects.count() == 0


def test_a_backends_start_allowance_extends_timeouts_and_deadlines(
    user: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that may wait to start a sandbox (a pod being scheduled) gets that time on
    top of the wall time, so the reaper does not close a run that is still starting."""
    evaluation = submit(user, runtime, test_cases=[{"stdin": "1"}, {"stdin": "2"}])
    plain_timeout = budget.task_timeout_s(evaluation, backend="fake")
    plain_orphan_age = budget.orphan_age_s()
    monkeypatch.setattr(FakeBackend, "start_allowance_s", 45.0)
    assert budget.task_timeout_s(evaluation, backend="fake") == plain_timeout + 2 * 45
    assert budget.orphan_age_s() == plain_orphan_age + 45

    execution = services.execution_claim(evaluation.executions.get().pk)
    assert execution is not None and execution.deadline_at is not None
    assert execution.started_at is not None
    allowed = (execution.deadline_at - execution.started_at).total_seconds()
    per_run = evaluation.time_limit_ms / 1000 + budget.RUN_OVERHEAD_S + 45
    assert allowed == pytest.approx(2 * per_run)


def test_a_hidden_case_output_never_lands_on_the_execution(
    user: Any, runtime: Runtime, client: Any
) -> None:
    evaluation = submit(
        user,
        runtime,
        source=fake(stdout="the hidden answer", exit_code=0),
        test_cases=[{"stdin": "secret", "expected_output": "x", "hidden": True}],
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.verdict == "wrong_answer" and execution.exit_code == 0
    assert bytes(execution.stdout) == b"" and bytes(execution.stderr) == b""
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert 'id="stdout"' not in page and "(hidden)" in page


def test_an_infrastructure_error_on_a_hidden_case_shows_no_output(
    user: Any, runtime: Runtime, client: Any
) -> None:
    evaluation = submit(
        user,
        runtime,
        source=fake(error_kind="unavailable", error_message="engine down"),
        test_cases=[{"stdin": "secret", "expected_output": "x", "hidden": True}],
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "error" and bytes(execution.stdout) == b""
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "engine down" in page and "secret" not in page
