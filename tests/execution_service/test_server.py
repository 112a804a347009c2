"""The execution service's HTTP server: sessions, their steps as they end, idempotency, long
polls, cancel, health, retention.

Served in process over a stub backend. No Docker: the sandbox is not under test here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from execution_service import VERSION, server
from sandbox import wire
from sandbox.contract import CompileStep, ErrorKind, Health, RunRequest, RunResult, Session
from sandbox.policy import Limits

from .stub_service import CAPS, SECRET, Node, body_of, echo, error_of, make_session

COMPILE = wire.Step(wire.COMPILE)


def case(index: int) -> wire.Step:
    return wire.Step(wire.CASE, index)


def echoed(session: Session, index: int) -> RunResult:
    """What the stub answers for case ``index`` of ``session``."""
    return echo(session.case_request(index))


def progress(node: Node, session_id: str, query: str = "") -> wire.Progress:
    answer = node.get(session_id, query)
    assert answer.status_code == 200, answer.text
    return wire.progress_from_json(answer.json())


def close_gate_after_case_0(node: Node) -> None:
    """Let case 0 end, then hold every later step at the gate."""

    def answer(request: RunRequest) -> RunResult:
        if request.stdin == b"first":
            node.backend.gate.clear()
        return echo(request)

    node.backend.answer = answer


# -- a session, start to finish


def test_a_signed_session_is_accepted_and_each_case_reported_in_order(node: Node) -> None:
    node.backend.gate.clear()
    session = make_session(stdins=[b"first", b"", b"\x00third"])
    accepted = node.put(session)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["session_id"] == "run-1"
    assert accepted.json()["state"] in ("queued", "running")
    assert "results" not in accepted.json(), "a submission's answer carries no results"
    assert node.backend.entered.get(timeout=5) == "run-1: case 0"
    assert node.get("run-1").json() == {"session_id": "run-1", "state": "running", "results": []}

    node.backend.gate.set()
    assert node.finish("run-1") == [(case(i), echoed(session, i)) for i in range(3)]
    # The backend got the session as the platform built it, bytes and all.
    assert node.backend.received == [session]


def test_a_compile_step_is_reported_before_the_cases(node: Node) -> None:
    compile_step = CompileStep(
        ("cc", "main.c"), Limits(wall_time_ms=3000, memory_mb=200, output_bytes=50)
    )
    session = make_session(stdins=[b"a", b"b"], compile=compile_step)
    assert node.put(session).status_code == 202
    compiled = RunResult(exit_code=0, stdout=b"compiled", handle="run-1")
    assert node.finish("run-1") == [
        (COMPILE, compiled),
        (case(0), echoed(session, 0)),
        (case(1), echoed(session, 1)),
    ]
    assert node.backend.received[0].compile == compile_step


def test_a_compile_step_that_fails_ends_the_session_before_any_case(node: Node) -> None:
    node.backend.compile_answer = lambda session: RunResult(exit_code=1, stderr=b"syntax error")
    compile_step = CompileStep(("cc",), Limits(wall_time_ms=1000, memory_mb=64, output_bytes=50))
    assert node.put(make_session(stdins=[b"a", b"b"], compile=compile_step)).status_code == 202
    assert node.finish("run-1") == [(COMPILE, RunResult(exit_code=1, stderr=b"syntax error"))]
    assert node.backend.entered.qsize() == 1, "no case ran"


def test_an_infrastructure_failure_ends_the_session_at_its_step(node: Node) -> None:
    lost = RunResult.failure(ErrorKind.UNAVAILABLE, "engine gone", handle="run-1")
    node.backend.answer = lambda request: lost if request.stdin == b"b" else echo(request)
    session = make_session(stdins=[b"a", b"b", b"c"])
    assert node.put(session).status_code == 202
    assert node.finish("run-1") == [(case(0), echoed(session, 0)), (case(1), lost)]
    assert node.backend.entered.qsize() == 2, "case 2 never ran"


def test_each_step_can_be_read_as_soon_as_it_ends(node: Node) -> None:
    close_gate_after_case_0(node)
    session = make_session(stdins=[b"first", b"second"])
    assert node.put(session).status_code == 202
    early = progress(node, "run-1", "?after=0&wait=5")
    assert early == wire.Progress("running", [(case(0), echoed(session, 0))])
    # Nothing beyond case 0 yet: a short poll for more comes back empty.
    assert progress(node, "run-1", "?after=1&wait=0.2") == wire.Progress("running", [])
    node.backend.gate.set()
    late = progress(node, "run-1", "?after=1&wait=5")
    assert late.results == [(case(1), echoed(session, 1))]


def test_after_skips_the_results_a_client_already_holds(node: Node) -> None:
    session = make_session(stdins=[b"a", b"b", b"c"])
    assert node.put(session).status_code == 202
    node.finish("run-1")
    assert progress(node, "run-1", "?after=2") == wire.Progress(
        "done", [(case(2), echoed(session, 2))]
    )
    assert progress(node, "run-1", "?after=3") == wire.Progress("done", [])
    assert progress(node, "run-1", "?after=99") == wire.Progress("done", [])


def test_a_long_poll_returns_as_soon_as_a_step_ends(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_session()).status_code == 202
    node.backend.entered.get(timeout=5)
    threading.Timer(0.2, node.backend.gate.set).start()
    began = time.monotonic()
    assert len(progress(node, "run-1", "?wait=20").results) == 1
    assert time.monotonic() - began < 5, "the poll waited for its full length"


def test_a_long_poll_is_cut_at_max_wait(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_WAIT_S", 0.2)
    node.backend.gate.clear()
    assert node.put(make_session()).status_code == 202
    began = time.monotonic()
    answer = progress(node, "run-1", "?wait=3600")
    assert answer.state in ("queued", "running") and answer.results == []
    assert 0.15 < time.monotonic() - began < 5


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?wait=soon", "wait must be a number"),
        ("?wait=1s", "wait must be a number"),
        ("?after=-1", "after must be a whole number"),
        ("?after=1.5", "after must be a whole number"),
        ("?after=two", "after must be a whole number"),
        ("?after=%D9%A1", "after must be a whole number"),  # an Arabic-Indic digit
    ],
)
def test_a_poll_with_a_bad_query_is_refused(node: Node, query: str, error: str) -> None:
    assert node.put(make_session()).status_code == 202
    answer = node.get("run-1", query)
    assert answer.status_code == 400
    assert error_of(answer) == error


def test_an_unknown_session_is_404(node: Node) -> None:
    answer = node.get("never-submitted")
    assert answer.status_code == 404
    assert error_of(answer) == "no session never-submitted"


# -- idempotent submission


def test_the_same_body_again_returns_the_existing_session(node: Node) -> None:
    node.backend.gate.clear()
    session = make_session()
    assert node.put(session).status_code == 202
    again = node.put(session)
    assert again.status_code == 200
    assert again.json()["session_id"] == "run-1"
    node.backend.gate.set()
    node.finish("run-1")
    # And after it is done: still the same session, never run twice.
    assert node.put(session).json() == {"session_id": "run-1", "state": "done"}
    assert len(node.backend.received) == 1


def test_a_different_body_under_the_same_id_is_409(node: Node) -> None:
    assert node.put(make_session()).status_code == 202
    other = node.put(make_session(stdins=[b"other input"]))
    assert other.status_code == 409
    assert error_of(other) == "session run-1 exists with a different request"
    node.finish("run-1")
    assert [s.stdins for s in node.backend.received] == [[b"in\x00put"]]


def test_the_same_session_spelt_differently_is_a_different_body(node: Node) -> None:
    """Idempotency compares the exact bytes, which the platform's client keeps stable."""
    body = body_of(make_session())
    assert node.put(make_session(), body).status_code == 202
    assert node.put(make_session(), body + b" ").status_code == 409


# -- cancel


def test_cancel_stops_the_running_step_and_runs_no_further_one(node: Node) -> None:
    close_gate_after_case_0(node)
    session = make_session("to-stop", stdins=[b"first", b"second", b"third"])
    assert node.put(session).status_code == 202
    assert node.backend.entered.get(timeout=5) == "to-stop: case 0"
    assert node.backend.entered.get(timeout=5) == "to-stop: case 1"
    answer = node.delete("to-stop")
    assert answer.status_code == 200
    assert answer.json()["session_id"] == "to-stop"
    assert node.backend.cancelled == ["to-stop"]
    results = node.finish("to-stop")
    assert results == [
        (case(0), echoed(session, 0)),
        (case(1), RunResult.failure(ErrorKind.CANCELLED, "cancelled", handle="to-stop")),
    ]
    assert node.backend.entered.empty(), "case 2 never started"


def test_a_session_cancelled_between_steps_reports_the_next_one_cancelled(node: Node) -> None:
    """The backend has no sandbox to stop between two steps: the service's answer to the
    step that ended stops the session, and the step that would have run says why."""

    def cancel_then_echo(request: RunRequest) -> RunResult:
        node.service.sessions["run-1"].cancel()
        return echo(request)

    node.backend.answer = cancel_then_echo
    session = make_session(stdins=[b"a", b"b"])
    assert node.put(session).status_code == 202
    assert node.finish("run-1") == [
        (case(0), echoed(session, 0)),
        (
            case(1),
            RunResult.failure(
                ErrorKind.CANCELLED, "The session was cancelled before case 1 ran.", handle="run-1"
            ),
        ),
    ]
    assert node.backend.entered.qsize() == 1


def test_cancelling_a_finished_session_does_not_touch_the_backend(node: Node) -> None:
    assert node.put(make_session()).status_code == 202
    node.finish("run-1")
    answer = node.delete("run-1")
    assert answer.status_code == 200
    assert answer.json() == {"session_id": "run-1", "state": "done"}
    assert node.backend.cancelled == []


def test_cancelling_an_unknown_session_is_404(node: Node) -> None:
    answer = node.delete("nobody")
    assert answer.status_code == 404
    assert node.backend.cancelled == []


# -- health


def test_health_reports_the_backends_health_and_the_capacity(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=3, max_cases=20, max_stdin_bytes=1000)
    node.backend.health_answer = Health(ok=False, detail="engine down", version="27.1")
    assert node.health() == {
        "ok": False,
        "detail": "engine down",
        "backend": "stub",
        "backend_version": "27.1",
        "version": VERSION,
        "capacity": 3,
        "in_use": 0,
        "sessions_started": 0,
        "caps": dataclasses.asdict(CAPS),
        "max_cases": 20,
        "max_stdin_bytes": 1000,
    }
    assert node.backend.health_calls == 1, "health asks the backend every time"


def test_health_counts_sessions_in_use_and_started(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_session("a")).status_code == 202
    node.backend.entered.get(timeout=5)
    during = node.health()
    assert (during["in_use"], during["sessions_started"]) == (1, 1)
    node.backend.gate.set()
    node.finish("a")
    assert node.put(make_session("b")).status_code == 202
    node.finish("b")
    after = node.health()
    assert (after["in_use"], after["sessions_started"]) == (0, 2)


def test_a_health_check_that_raises_is_500_and_the_service_goes_on(node: Node) -> None:
    node.backend.health_answer = RuntimeError("engine socket gone")
    answer = node.call("GET", "/v1/health")
    assert answer.status_code == 500
    assert error_of(answer) == "internal error: engine socket gone"
    node.backend.health_answer = Health(ok=True, detail="back")
    assert node.health()["detail"] == "back"


# -- a backend that breaks its contract


def test_a_backend_that_raises_gives_a_failure_result_and_frees_its_slot(
    start: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    node = start(max_concurrent_per_service=1)

    def explode(request: RunRequest) -> RunResult:
        raise RuntimeError("engine exploded")

    node.backend.answer = explode
    with caplog.at_level("ERROR", logger="execution_service"):
        assert node.put(make_session("boom")).status_code == 202
        results = node.finish("boom")
    assert results == [
        (
            case(0),
            RunResult.failure(
                ErrorKind.BACKEND_ERROR, "execution service error: engine exploded", handle="boom"
            ),
        )
    ]
    assert [r.getMessage() for r in caplog.records] == ["backend raised on session boom"]
    node.backend.answer = echo
    assert node.put(make_session("next")).status_code == 202, "the slot was given back"
    assert node.finish("next")[0][1].exit_code == 3


def test_a_backend_that_ends_a_session_early_leaves_no_step_waiting(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.backend, "run_session", lambda session, observer: None)
    assert node.put(make_session(stdins=[b"a", b"b"])).status_code == 202
    assert node.finish("run-1") == [
        (
            case(0),
            RunResult.failure(
                ErrorKind.BACKEND_ERROR,
                "The backend ended the session without a result for case 0.",
                handle="run-1",
            ),
        )
    ]


# -- retention


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_finished_session_is_forgotten_after_retention_s(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=600)
    assert node.put(make_session()).status_code == 202
    node.finish("run-1")
    clock.now += 600
    assert node.get("run-1").status_code == 200, "kept for retention_s inclusive"
    clock.now += 0.5
    assert node.get("run-1").status_code == 404
    # The id is free again: a different session under it is new, not a conflict.
    assert node.put(make_session(stdins=[b"new"])).status_code == 202


def test_a_session_in_flight_is_never_forgotten(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=1, retention_count=0)
    node.backend.gate.clear()
    assert node.put(make_session()).status_code == 202
    clock.now += 3600
    assert node.get("run-1").status_code == 200
    # The poll that was waiting when the session finished gets the results; the next
    # request forgets it (one that finished before its first poll would be gone already).
    threading.Timer(0.3, node.backend.gate.set).start()
    assert node.finish("run-1")[0][1].exit_code == 3
    assert node.get("run-1").status_code == 404


def test_at_most_retention_count_finished_sessions_are_kept(start: Callable[..., Node]) -> None:
    node = start(retention_count=2)
    for session_id in ("r1", "r2", "r3"):
        assert node.put(make_session(session_id)).status_code == 202
        node.finish(session_id)
    assert node.get("r1").status_code == 404, "the oldest goes first"
    assert node.get("r2").status_code == 200
    assert node.get("r3").status_code == 200
    assert list(node.service.sessions) == ["r2", "r3"]


# -- the platform's client


def test_the_platforms_remote_backend_runs_through_this_server(node: Node) -> None:
    """The client and the server agree on paths, signing and the wire without Docker."""
    from executions.backends.remote import RemoteBackend
    from tests.sandbox.conformance import make_request

    client = RemoteBackend(urls=[node.url], secret=SECRET, poll_wait_s=1, grace_s=5)
    request = make_request("python:3.12", "print(1)", stdin=b"in")
    result = client.run(request)
    assert result == echo(request)
    assert node.backend.received == [Session.of_request(request)]
    assert client.health().ok is True
