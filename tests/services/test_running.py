"""Claim and run through the services, on the real database: outputs, verdicts, scores, and
failures of the backend contained."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import OperationalError

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import Execution, Runtime
from executions.services.running import COMPILE_OUTPUT_BYTES
from sandbox.contract import (
    ExecutionBackend,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
)
from tests.services.conftest import fake, latest, submit

pytestmark = pytest.mark.django_db


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
        return Isolation()


def test_nul_bytes_and_invalid_utf8_in_output_are_stored_exactly(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.HostileOutputBackend",
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
        user, runtime, source=fake(error_kind="backend_error", error_message="engine broke")
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("error", "internal_error")
    assert (execution.error_kind, execution.error_message) == ("backend_error", "engine broke")


class ExplodingBackend(HostileOutputBackend):
    def run(self, request: RunRequest) -> RunResult:
        raise RuntimeError("kaboom")


def test_a_backend_that_raises_is_contained(user: Any, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.ExplodingBackend",
    }
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
        source=fake(error_kind="backend_error", error_message="engine down"),
        test_cases=[{"stdin": "secret", "expected_output": "x", "hidden": True}],
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.status == "error" and bytes(execution.stdout) == b""
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "engine down" in page and "secret" not in page


class TearsDownSlowly(HostileOutputBackend):
    """Reports every case, then notes what the platform had stored before it returned."""

    seen_on_return: str = ""

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        observer.case_starting(0, session.handle)
        observer.case_ended(0, RunResult(exit_code=0, stdout=b"4\n", handle=session.handle))
        # Removing the sandbox comes after the last result: the verdict must not wait.
        TearsDownSlowly.seen_on_return = Execution.objects.get(backend_handle=session.handle).status


def test_the_execution_ends_as_its_last_case_is_judged_not_after_teardown(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.TearsDownSlowly",
    }
    evaluation = submit(user, runtime, test_cases=[{"stdin": "2\n", "expected_output": "4"}])
    services.execution_run(latest(evaluation).pk)
    assert TearsDownSlowly.seen_on_return == "finished"
    assert (latest(evaluation).status, latest(evaluation).verdict) == ("finished", "accepted")


class StopsEarly(HostileOutputBackend):
    """A broken backend: returns after one of two cases, with no failure."""

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        observer.case_starting(0, session.handle)
        observer.case_ended(0, RunResult(exit_code=0, stdout=b"4\n", handle=session.handle))


def test_a_session_that_skips_cases_ends_in_error_not_in_a_verdict(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.StopsEarly",
    }
    evaluation = submit(
        user,
        runtime,
        test_cases=[
            {"stdin": "2\n", "expected_output": "4"},
            {"stdin": "3\n", "expected_output": "9"},
        ],
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.error_kind) == ("error", "backend_error")
    assert "without reporting every case" in execution.error_message


# A compile step ------------------------------------------------------------------------------

ADDS_ONE = [
    {"stdin": "1\n", "expected_output": "1"},
    {"stdin": "2\n", "expected_output": "3"},
]


def test_a_runtime_that_compiles_compiles_once_then_each_case_is_judged(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(
        user,
        compiling_runtime,
        source=fake(compile_stderr="main.c:3: warning: unused\n"),
        test_cases=ADDS_ONE,
        output_kb=1,
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("finished", "wrong_answer")
    assert execution.score == Decimal("50.00")
    verdicts = list(execution.results.values_list("verdict", flat=True))
    assert verdicts == ["accepted", "wrong_answer"]
    assert (execution.compile_status, execution.compile_exit_code) == ("compiled", 0)
    assert bytes(execution.compile_output) == b"main.c:3: warning: unused\n"
    assert execution.compile_time_ms is not None and not execution.compile_output_truncated
    (step,) = FakeBackend.compiles
    assert step.command == ["gcc", "-O2", "-o", "main", "main.c"]
    # Its own time and memory, a compiler log's output cap (not the program's 1 KB), and the
    # runtime's other limits.
    assert (step.limits.wall_time_ms, step.limits.memory_mb) == (7_000, 384)
    assert step.limits.output_bytes == COMPILE_OUTPUT_BYTES == 64 * 1024
    assert step.limits.pids == 32
    assert [request.stdin for request in FakeBackend.runs] == [b"1\n", b"2\n"]
    assert FakeBackend.runs[0].limits.output_bytes == 1024


def test_a_failed_compile_is_a_compilation_error_and_no_case_runs(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(
        user,
        compiling_runtime,
        source=fake(
            compile_exit_code=1,
            compile_stdout="gcc: note\n",
            compile_stderr="main.c:1:1: error: expected ';'\n",
        ),
        test_cases=ADDS_ONE,
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("finished", "compilation_error")
    assert execution.score == Decimal("0.00")
    assert (execution.compile_status, execution.compile_exit_code) == ("failed", 1)
    assert bytes(execution.compile_output) == b"gcc: note\nmain.c:1:1: error: expected ';'\n"
    assert execution.results.count() == 0 and FakeBackend.runs == []
    assert execution.error_kind == "" and execution.exit_code is None


def test_a_failed_compile_without_test_cases_has_no_score(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(user, compiling_runtime, source=fake(compile_exit_code=2))
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("finished", "compilation_error")
    assert execution.score is None and FakeBackend.runs == []


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ({"compile_timed_out": True, "compile_exit_code": 137}, "time_limit"),
        ({"compile_oom_killed": True, "compile_exit_code": 137}, "memory_limit"),
        ({"compile_stdout": "warning\n", "compile_repeat": 10_000}, "output_limit"),
        ({"compile_signal": 11}, "failed"),
    ],
)
def test_a_compile_step_stopped_by_a_limit_is_a_compilation_error_that_says_why(
    user: Any, compiling_runtime: Runtime, spec: dict[str, Any], status: str
) -> None:
    evaluation = submit(user, compiling_runtime, source=fake(**spec), test_cases=ADDS_ONE)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("finished", "compilation_error")
    assert execution.compile_status == status
    assert execution.results.count() == 0 and FakeBackend.runs == []


def test_an_infrastructure_failure_while_compiling_is_an_infrastructure_error(
    user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = submit(
        user,
        compiling_runtime,
        source=fake(compile_error_kind="backend_error", compile_error_message="engine down"),
        test_cases=ADDS_ONE,
    )
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.verdict) == ("error", "internal_error")
    assert (execution.error_kind, execution.error_message) == ("backend_error", "engine down")
    assert execution.compile_status == "" and execution.results.count() == 0


def test_a_backend_that_cannot_compile_ends_in_infrastructure_error(
    user: Any, compiling_runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.HostileOutputBackend",
    }
    evaluation = submit(user, compiling_runtime)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.error_kind) == ("error", "backend_error")
    assert "cannot run a compile step" in execution.error_message


class HostileCompiler(HostileOutputBackend):
    """A compiler that prints what a hostile one could, then fails."""

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        assert session.compile is not None
        observer.case_starting(0, session.handle)
        observer.compile_ended(
            RunResult(exit_code=1, stdout=self.OUTPUT, stderr=b"\x00<b>", handle=session.handle)
        )


def test_compile_output_is_stored_exactly(
    user: Any, compiling_runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.HostileCompiler",
    }
    evaluation = submit(user, compiling_runtime)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert execution.verdict == "compilation_error"
    assert bytes(execution.compile_output) == HostileOutputBackend.OUTPUT + b"\x00<b>"
    assert execution.compile_output_text.endswith("\ufffd(\u2400<b>")


class CancelledWhileCompiling(HostileOutputBackend):
    """The execution is cancelled while its compile step runs, which then fails."""

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        observer.case_starting(0, session.handle)
        Execution.objects.filter(pk=session.execution_id).update(status="cancelled")
        CancelledWhileCompiling.went_on = observer.compile_ended(
            RunResult(exit_code=1, stderr=b"error", handle=session.handle)
        )

    went_on = True


def test_a_compile_step_ending_after_a_cancel_changes_nothing(
    user: Any, compiling_runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.CancelledWhileCompiling",
    }
    evaluation = submit(user, compiling_runtime)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert CancelledWhileCompiling.went_on is False
    assert (execution.status, execution.verdict) == ("cancelled", "")
    assert execution.compile_status == "" and bytes(execution.compile_output) == b""


# -- riding out outages ------------------------------------------------------------------


def test_a_run_its_backend_could_not_start_goes_back_to_the_queue_unsent(
    user: Any, runtime: Runtime
) -> None:
    evaluation = submit(user, runtime, source=fake(error_kind="unavailable", error_message="down"))
    execution = latest(evaluation)
    services.execution_run(execution.pk)
    execution.refresh_from_db()
    assert (execution.status, execution.worker, execution.started_at) == ("queued", "", None)
    assert execution.dispatched_at is None, "the recovery lane sends it when the backend answers"
    assert execution.requeue_count == 1 and evaluation.executions.count() == 1
    event = execution.audit_events.get(action="release")
    assert event.detail == {"reason": "down"}
    services.execution_run(execution.pk)  # another task: it leaves the unsent run alone
    execution.refresh_from_db()
    assert execution.status == "queued" and execution.requeue_count == 1


def test_a_run_that_keeps_finding_its_backend_down_ends_in_error(
    user: Any, runtime: Runtime
) -> None:
    from executions.services.running import MAX_RELEASES

    evaluation = submit(user, runtime, source=fake(error_kind="unavailable", error_message="down"))
    Execution.objects.update(requeue_count=MAX_RELEASES)
    services.execution_run(latest(evaluation).pk)
    execution = latest(evaluation)
    assert (execution.status, execution.error_kind) == ("error", "unavailable")


def test_a_run_the_infrastructure_interrupted_is_run_again(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 2}
    evaluation = submit(user, runtime, source=fake(error_kind="backend_error", error_message="x"))
    first = latest(evaluation)
    services.execution_run(first.pk)
    retry = latest(evaluation)
    assert (retry.attempt, retry.status, retry.retry_of_id, retry.retry_count) == (
        2,
        "queued",
        first.pk,
        1,
    )
    services.execution_run(retry.pk)
    assert latest(evaluation).status == "queued", "held until the recovery lane sends it"
    services.executions_redispatch()
    services.execution_run(retry.pk)
    services.executions_redispatch()
    services.execution_run(retry.pk)
    attempts = list(evaluation.executions.order_by("attempt").values_list("status", "retry_count"))
    assert attempts == [("error", 0), ("error", 1), ("error", 2)], "two re-runs, then it stops"


def test_a_program_that_fails_is_not_run_again(user: Any, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 2}
    evaluation = submit(user, runtime, source=fake(exit_code=3))
    services.execution_run(latest(evaluation).pk)
    assert evaluation.executions.count() == 1


class DatabaseBlip:
    """Fails the first ``count`` updates of executions as a restarting database does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        from django.db.models import QuerySet

        self.left = count
        real_update = QuerySet.update

        def update(queryset: Any, **fields: Any) -> int:
            if queryset.model is Execution and self.left > 0:
                self.left -= 1
                raise OperationalError("server closed the connection unexpectedly")
            return real_update(queryset, **fields)

        monkeypatch.setattr(QuerySet, "update", update)
        monkeypatch.setattr("executions.services.running.time.sleep", lambda s: None)


def test_a_result_is_kept_and_written_once_the_database_answers(
    user: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    evaluation = submit(user, runtime, test_cases=[{"stdin": "1\n", "expected_output": "1"}])
    execution = latest(evaluation)
    DatabaseBlip(monkeypatch, count=0)
    from executions.services import running

    real_claim = running._claim

    def claim_then_blip(target: Execution) -> bool:
        claimed = real_claim(target)
        DatabaseBlip(monkeypatch, count=4)  # every write after the claim fails at first
        return claimed

    monkeypatch.setattr(running, "_claim", claim_then_blip)
    services.execution_run(execution.pk)
    execution.refresh_from_db()
    assert (execution.status, execution.verdict) == ("finished", "accepted")
    assert execution.results.count() == 1
    assert "trying again until the database answers" in caplog.text


def test_writes_give_up_after_write_retry_s(
    user: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from executions.services.running import _durably

    settings.EXECUTIONS = {**settings.EXECUTIONS, "WRITE_RETRY_S": 1}
    clock = [0.0]
    monkeypatch.setattr("executions.services.running.time.monotonic", lambda: clock[0])

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("executions.services.running.time.sleep", sleep)
    calls: list[float] = []

    def write() -> int:
        calls.append(clock[0])
        raise OperationalError("the database system is starting up")

    with pytest.raises(OperationalError):
        _durably(write, "store its result", 1)
    assert len(calls) >= 3 and clock[0] <= 1


def test_a_sandbox_stopped_from_outside_is_an_infrastructure_error(
    user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 1}
    source = fake(error_kind="cancelled", error_message="The sandbox was removed.")
    evaluation = submit(user, runtime, source=source)
    first = latest(evaluation)
    services.execution_run(first.pk)
    first.refresh_from_db()
    assert (first.status, first.error_kind) == ("error", "backend_error")
    assert first.error_message.startswith("The sandbox was stopped or removed from outside")
    assert latest(evaluation).retry_of_id == first.pk, "the submitter did nothing wrong"
