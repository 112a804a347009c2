"""The fake backend: deterministic stand-in runs for the platform's tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from executions.backends.fake import FakeBackend
from sandbox.contract import CompileStep, ErrorKind, RunResult, Session, compiled
from sandbox.policy import Limits
from tests.backends.runs import request


def test_fake_echoes_stdin_and_caps_output() -> None:
    result = FakeBackend().run(request(stdin=b"0123456789abcdef"))
    assert (result.exit_code, result.stdout, result.stdout_truncated) == (0, b"0123456789", True)


def test_fake_follows_its_directive() -> None:
    files = {"main.py": b'# fake: {"stdout": "x", "exit_code": 4, "stderr": "boom"}\n'}
    result = FakeBackend().run(request(files=files))
    assert (result.stdout, result.stderr, result.exit_code) == (b"x", b"boom", 4)


class Observer:
    """Records what a session told, in order; ``stop_at_compile`` answers False there."""

    def __init__(self, *, stop_at_compile: bool = False) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.stop_at_compile = stop_at_compile

    def case_starting(self, index: int, handle: str) -> bool:
        self.events.append(("starting", index, handle))
        return True

    def compile_ended(self, result: RunResult) -> bool:
        self.events.append(("compiled", result))
        return not self.stop_at_compile

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.events.append(("ended", index, result.stdout))
        return True


def compiling_session(source: bytes, *, compile_output_bytes: int = 100) -> Session:
    case = request(files={"main.c": source})
    limits = Limits(wall_time_ms=5000, memory_mb=256, output_bytes=compile_output_bytes)
    return replace(
        Session.of_request(case),
        stdins=[b"1", b"2"],
        compile=CompileStep(command=["cc", "main.c"], limits=limits),
    )


def test_fake_compiles_once_then_runs_every_case() -> None:
    observer = Observer()
    FakeBackend().run_session(compiling_session(b"int main;"), observer)
    kinds = [event[0] for event in observer.events]
    assert kinds == ["starting", "compiled", "ended", "starting", "ended"]
    compile_result = observer.events[1][1]
    assert compiled(compile_result) and compile_result.stdout == b""
    assert [event[2] for event in observer.events if event[0] == "ended"] == [b"1", b"2"]
    assert [step.command for step in FakeBackend.compiles] == [["cc", "main.c"]]
    assert len(FakeBackend.runs) == 2


def test_a_failed_compile_runs_no_case() -> None:
    source = b'# fake: {"compile_exit_code": 1, "compile_stderr": "main.c:1: error"}\n'
    observer = Observer()
    FakeBackend().run_session(compiling_session(source), observer)
    assert [event[0] for event in observer.events] == ["starting", "compiled"]
    result = observer.events[1][1]
    assert (result.exit_code, result.stderr) == (1, b"main.c:1: error")
    assert not compiled(result) and FakeBackend.runs == []


def test_compile_output_is_capped_at_the_compile_steps_limit() -> None:
    source = b'# fake: {"compile_stdout": "warning\\n", "compile_repeat": 100}\n'
    observer = Observer()
    FakeBackend().run_session(compiling_session(source, compile_output_bytes=64), observer)
    result = observer.events[1][1]
    assert len(result.stdout) == 64 and result.stdout_truncated and not compiled(result)


def test_the_observer_can_stop_the_session_after_the_compile_step() -> None:
    observer = Observer(stop_at_compile=True)
    FakeBackend().run_session(compiling_session(b"int main;"), observer)
    assert [event[0] for event in observer.events] == ["starting", "compiled"]


def test_a_compile_step_failing_in_the_infrastructure_is_a_failure_result() -> None:
    source = b'# fake: {"compile_error_kind": "unavailable", "compile_error_message": "gone"}\n'
    observer = Observer()
    FakeBackend().run_session(compiling_session(source), observer)
    result = observer.events[1][1]
    assert (result.error_kind, result.error_message) == (ErrorKind.UNAVAILABLE, "gone")
    assert FakeBackend.runs == []
