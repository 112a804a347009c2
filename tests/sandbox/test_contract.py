"""The template ``ExecutionBackend.run``: the request checked once, a raising backend
contained, the wall-time rule applied once for every backend; and the default session, a run
per case."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from sandbox.contract import (
    CompileStep,
    ErrorKind,
    ExecutionBackend,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
)
from sandbox.policy import Limits, SandboxPolicy

WALL_MS = 1000


def make_request(**changes: object) -> RunRequest:
    request = RunRequest(
        execution_id=42,
        handle="evalplatform-42-0",
        image="img",
        command=("python3", "main.py"),
        files={"main.py": b"print(1)\n"},
        stdin=b"",
        policy=SandboxPolicy(limits=Limits(wall_time_ms=WALL_MS, memory_mb=64, output_bytes=64)),
    )
    return replace(request, **changes)  # type: ignore[arg-type]


class Scripted(ExecutionBackend):
    """Answers with ``answer`` (or raises it), counting what reaches ``_run``."""

    name = "scripted"

    def __init__(self, answer: RunResult | Exception) -> None:
        super().__init__()
        self.answer = answer
        self.reached: list[RunRequest] = []

    def _run(self, request: RunRequest) -> RunResult:
        self.reached.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return replace(self.answer, handle=request.handle)

    def describe(self) -> Isolation:
        return Isolation()


def test_a_valid_request_reaches_the_backend_once() -> None:
    backend = Scripted(RunResult(exit_code=0, wall_time_ms=10))
    result = backend.run(make_request())
    assert (result.exit_code, result.timed_out, result.error_kind) == (0, False, None)
    assert len(backend.reached) == 1


def test_a_runtime_without_a_command_never_reaches_the_backend() -> None:
    backend = Scripted(RunResult(exit_code=0))
    result = backend.run(make_request(command=()))
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert result.error_message == "The runtime has no command."
    assert result.handle == "evalplatform-42-0"
    assert backend.reached == []


@pytest.mark.parametrize("name", ["/etc/passwd", "../main.py", "pkg/../../x", "", "a\x00b"])
def test_an_unsafe_file_name_never_reaches_the_backend(name: str) -> None:
    backend = Scripted(RunResult(exit_code=0))
    result = backend.run(make_request(files={"main.py": b"", name: b"x"}))
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "unsafe file name" in result.error_message
    assert backend.reached == []


def test_an_exception_becomes_a_backend_error_logged_once_with_the_execution_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Scripted(RuntimeError("kaboom"))
    with caplog.at_level(logging.INFO):
        result = backend.run(make_request())
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert result.error_message == "Scripted backend error: RuntimeError: kaboom"
    assert result.handle == "evalplatform-42-0"
    records = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in records] == [
        "scripted backend failed on execution 42"
    ]
    assert records[0].exc_info is not None, "the traceback is kept"
    assert records[0].name == __name__, "logged under the backend's own module"


@pytest.mark.parametrize(
    ("answer", "timed_out"),
    [
        (RunResult(exit_code=0, wall_time_ms=WALL_MS + 1), True),
        (RunResult(exit_code=1, signal=None, wall_time_ms=WALL_MS * 3), True),
        (RunResult(exit_code=None, signal=9, wall_time_ms=WALL_MS + 1), True),
        (RunResult(exit_code=0, wall_time_ms=WALL_MS), False),
        (RunResult(exit_code=0, wall_time_ms=None), False),
        # Killed by the runner (e.g. at the output cap): no exit status, the runner decided.
        (RunResult(exit_code=None, wall_time_ms=WALL_MS + 5), False),
        # A failure is not a program's time-out.
        (RunResult.failure(ErrorKind.CANCELLED, "stopped"), False),
    ],
)
def test_a_program_that_ended_by_itself_past_its_wall_time_is_timed_out(
    answer: RunResult, timed_out: bool
) -> None:
    if answer.error_kind is not None:
        answer.wall_time_ms = WALL_MS * 2
    result = Scripted(answer).run(make_request())
    assert result.timed_out is timed_out
    assert result.wall_time_ms == answer.wall_time_ms, "the measured time is kept"


def test_a_runner_time_out_stays_timed_out() -> None:
    result = Scripted(RunResult(timed_out=True, wall_time_ms=WALL_MS + 3)).run(make_request())
    assert result.timed_out


def test_request_problem_names_the_first_problem() -> None:
    assert make_request().problem() == ""
    assert make_request(command=[]).problem() == "The runtime has no command."
    assert "'../x'" in make_request(files={"../x": b""}).problem()


# -- sessions: by default, each case is a run of its own


def make_session(*stdins: bytes) -> Session:
    request = make_request()
    return Session(
        execution_id=request.execution_id,
        handle="evalplatform-42-abc123",
        image=request.image,
        command=request.command,
        files=request.files,
        policy=request.policy,
        stdins=stdins,
        labels={"evalplatform.evaluation": "7"},
    )


class Watching:
    """A session observer that records what it is told and stops where it is asked to."""

    def __init__(self, stop_before: int | None = None, stop_after: int | None = None) -> None:
        self.stop_before, self.stop_after = stop_before, stop_after
        self.told: list[tuple[str, int, str]] = []

    def case_starting(self, index: int, handle: str) -> bool:
        self.told.append(("starting", index, handle))
        return index != self.stop_before

    def compile_ended(self, result: RunResult) -> bool:
        self.told.append(("compiled", 0, result.handle))
        return True

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.told.append(("ended", index, result.handle))
        return index != self.stop_after


def test_a_session_runs_each_case_in_order_under_a_handle_of_its_own() -> None:
    backend = Scripted(RunResult(exit_code=0, wall_time_ms=5))
    watching = Watching()
    backend.run_session(make_session(b"1", b"2", b"3"), watching)
    handles = [f"evalplatform-42-abc123-{index}" for index in range(3)]
    assert [request.stdin for request in backend.reached] == [b"1", b"2", b"3"]
    assert [request.handle for request in backend.reached] == handles
    assert all(request.files == {"main.py": b"print(1)\n"} for request in backend.reached)
    assert all(request.labels == {"evalplatform.evaluation": "7"} for request in backend.reached)
    assert watching.told == [
        (step, index, handle)
        for index, handle in enumerate(handles)
        for step in ("starting", "ended")
    ]


def test_an_observer_stops_the_session_before_or_after_a_case() -> None:
    backend = Scripted(RunResult(exit_code=0))
    backend.run_session(make_session(b"1", b"2", b"3"), Watching(stop_before=1))
    assert [request.stdin for request in backend.reached] == [b"1"]
    backend = Scripted(RunResult(exit_code=0))
    backend.run_session(make_session(b"1", b"2", b"3"), Watching(stop_after=1))
    assert [request.stdin for request in backend.reached] == [b"1", b"2"]


def test_each_case_of_a_session_goes_through_the_template_run() -> None:
    backend = Scripted(RuntimeError("kaboom"))
    watching = Watching()
    backend.run_session(make_session(b"1"), watching)
    assert watching.told[-1] == ("ended", 0, "evalplatform-42-abc123-0")
    unsafe = replace(make_session(b"1"), files={"../x": b""})
    backend.run_session(unsafe, watching)
    assert len(backend.reached) == 1, "the unsafe request never reached the backend"


def test_the_default_session_refuses_a_compile_step_as_case_zero() -> None:
    backend = Scripted(RunResult(exit_code=0))
    watching = Watching()
    step = CompileStep(command=("cc", "main.c"), limits=Limits(1000, 64, 1000))
    backend.run_session(replace(make_session(b"1", b"2"), compile=step), watching)
    assert backend.reached == []
    assert watching.told == [
        ("starting", 0, "evalplatform-42-abc123-0"),
        ("ended", 0, "evalplatform-42-abc123-0"),
    ]


def test_a_session_names_what_no_backend_can_run() -> None:
    assert make_session(b"1").problem() == ""
    assert replace(make_session(b"1"), stdins=[]).problem() == "The session has no case to run."
    no_command = CompileStep(command=(), limits=Limits(1000, 64, 1000))
    assert (
        "compile step has no command" in replace(make_session(b"1"), compile=no_command).problem()
    )
    assert "unsafe" in replace(make_session(b"1"), files={"../x": b""}).problem()


def test_run_one_case_collects_the_single_result_under_the_requests_handle() -> None:
    class OneSession(Scripted):
        def run_session(self, session: Session, observer: SessionObserver) -> None:
            assert list(session.stdins) == [b"in"] and session.handle == "h-1"
            observer.case_starting(0, session.handle)
            observer.case_ended(0, RunResult(exit_code=3, handle=session.handle))

    request = replace(make_session(b"x").case_request(0), handle="h-1", stdin=b"in")
    result = OneSession(RunResult()).run_one_case(request)
    assert (result.exit_code, result.handle) == (3, "h-1")
