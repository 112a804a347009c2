"""RemoteBackend.run_session against the execution service served in process over a stub
backend: what the observer is told and when, stopping early, and failures of the
infrastructure as the result of the step they happened in. No Docker: test_remote.py runs
sessions on a real one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from executions.backends.remote import RemoteBackend
from sandbox.contract import CompileStep, ErrorKind, RunRequest, RunResult
from tests.execution_service.conftest import start
from tests.execution_service.stub_service import SECRET, Node, echo

from .sessions import Recorder, one_program_session

__all__ = ["start"]


@pytest.fixture
def node(start: Callable[..., Node]) -> Node:
    return start()


def client(*urls: str, **options: Any) -> RemoteBackend:
    return RemoteBackend(urls=urls, secret=SECRET, poll_wait_s=1, **options)


def test_each_case_is_announced_then_reported_and_the_service_left_done(node: Node) -> None:
    session = one_program_session("img", "print(1)", [b"a", b"b", b"c"])
    recorder = Recorder()
    client(node.url).run_session(session, recorder)
    assert recorder.told == [
        ("starting", 0),
        ("ended", 0),
        ("starting", 1),
        ("ended", 1),
        ("starting", 2),
        ("ended", 2),
    ]
    assert [r.stdout[:1] for r in recorder.results.values()] == [b"a", b"b", b"c"]
    assert recorder.handles == {session.handle}
    assert {r.handle for r in recorder.results.values()} == {session.handle}
    assert node.service.sessions[session.handle].state == "done"
    assert node.backend.cancelled == [], "a session that ran to its end is not cancelled"


def test_the_first_case_is_announced_before_the_session_is_sent(node: Node) -> None:
    """The platform records the handle that cancels the session before anything runs; an
    execution already cancelled answers False, and nothing is sent."""

    class Refusing(Recorder):
        def case_starting(self, index: int, handle: str) -> bool:
            super().case_starting(index, handle)
            return False

    refusing = Refusing()
    client(node.url).run_session(one_program_session("img", "print(1)", [b"a"]), refusing)
    assert refusing.told == [("starting", 0)]
    assert node.service.sessions == {}


def test_an_observer_that_stops_early_cancels_the_session(node: Node) -> None:
    def hold_after_case_0(request: RunRequest) -> RunResult:
        if request.stdin == b"a":
            node.backend.gate.clear()
        return echo(request)

    node.backend.answer = hold_after_case_0
    session = one_program_session("img", "print(1)", [b"a", b"b", b"c"])
    recorder = Recorder(stop_after=0)
    client(node.url).run_session(session, recorder)
    assert recorder.told == [("starting", 0), ("ended", 0)]
    assert node.backend.cancelled == [session.handle]
    record = node.service.sessions[session.handle]
    record.wait(after=1, timeout_s=5)
    assert [(str(step), result.error_kind) for step, result in record.results] == [
        ("case 0", None),
        ("case 1", ErrorKind.CANCELLED),
    ]


def test_a_refused_session_fails_its_compile_step(start: Callable[..., Node]) -> None:
    node = start(max_cases=1)
    session = one_program_session("img", "print(1)", [b"a", b"b"])
    session = replace(session, compile=CompileStep(("cc",), session.limits))
    recorder = Recorder()
    client(node.url).run_session(session, recorder)
    assert recorder.told == [("starting", 0), ("compiled", 0)]
    failure = recorder.compiled
    assert failure is not None
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "refused the session (400): 2 cases, above" in failure.error_message
    assert failure.handle == session.handle


def test_a_session_no_backend_can_run_is_never_sent(node: Node) -> None:
    session = replace(one_program_session("img", "print(1)", [b"a"]), command=())
    recorder = Recorder()
    client(node.url).run_session(session, recorder)
    assert [(r.error_kind, r.error_message) for r in recorder.results.values()] == [
        (ErrorKind.BACKEND_ERROR, "The runtime has no command.")
    ]
    assert node.service.sessions == {}


def test_a_service_lost_mid_session_fails_the_due_case_once_as_unavailable(
    node: Node,
) -> None:
    def hold_after_case_0(request: RunRequest) -> RunResult:
        if request.stdin == b"a":
            node.backend.gate.clear()
        return echo(request)

    def forget_the_session(index: int) -> None:
        if index == 1:  # as a service restarted since case 0 ended
            node.service.sessions.clear()

    node.backend.answer = hold_after_case_0
    recorder = Recorder(on_start=forget_the_session)
    client(node.url).run_session(
        one_program_session("img", "print(1)", [b"a", b"b", b"c"]), recorder
    )
    node.backend.gate.set()
    assert recorder.told == [("starting", 0), ("ended", 0), ("starting", 1), ("ended", 1)]
    (failure,) = recorder.failures()
    assert failure.error_kind == ErrorKind.BACKEND_ERROR, "it had started: it was lost"
    assert "lost session" in failure.error_message and node.url in failure.error_message


def test_a_session_past_its_deadline_fails_the_due_step_and_is_cancelled(node: Node) -> None:
    node.backend.gate.clear()
    session = one_program_session("img", "print(1)", [b"a", b"b"], wall_time_ms=100)
    recorder = Recorder()
    client(node.url, grace_s=0.3).run_session(session, recorder)
    assert recorder.told == [("starting", 0), ("ended", 0)]
    (failure,) = recorder.failures()
    assert failure.error_kind == ErrorKind.BACKEND_ERROR
    assert "within the wall times of its steps plus 0.3 s; it was cancelled" in (
        failure.error_message
    )
    assert node.backend.cancelled == [session.handle]


def test_run_is_a_session_of_one_case(node: Node) -> None:
    session = one_program_session("img", "print(1)", [b"in"])
    request = session.case_request(0)
    result = client(node.url).run(request)
    assert result == echo(request)
    (received,) = node.backend.received
    assert (received.handle, received.stdins) == (request.handle, [b"in"])
