"""The remote backend does not trust an execution node's answers: a compromised node cannot
make the platform store more output than a step allowed, read an endless answer, pass off
fields of the wrong type, or report steps the session does not have or out of order. The node
here is a small HTTP server that answers what it likes; no Docker is needed."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from executions.backends.remote import CONTROL_ANSWER_BYTES, RemoteBackend
from sandbox.contract import CompileStep, ErrorKind, RunResult
from tests.sandbox.conformance import make_request

from .sessions import Recorder, one_program_session

SECRET = "s" * 40
Answer = Callable[[str, str], tuple[int, bytes]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def done(**result: Any) -> bytes:
    """A finished one-case session whose result has ``result``'s fields."""
    return progress("done", case_entry(0, **result))


def case_entry(index: int, **result: Any) -> dict[str, Any]:
    fields = {"exit_code": 0, "stdout": "", "stderr": "", "handle": "x", **result}
    return {"step": "case", "index": index, "result": fields}


def progress(state: str, *entries: dict[str, Any]) -> bytes:
    return json.dumps({"session_id": "x", "state": state, "results": list(entries)}).encode()


@pytest.fixture
def hostile_node() -> Iterator[Callable[[Answer], str]]:
    """Start a node whose run results come from ``answer(method, path)``; health is fine."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/v1/health":
                    status, body = 200, b'{"ok": true, "capacity": 4, "in_use": 0}'
                else:
                    status, body = answer(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = _reply

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def backend(url: str) -> RemoteBackend:
    return RemoteBackend(urls=(url,), secret=SECRET, poll_wait_s=0.1, failover_budget_s=1)


def run_against(node: Callable[[Answer], str], result: bytes, output_bytes: int = 1024) -> Any:
    def answer(method: str, path: str) -> tuple[int, bytes]:
        return (202, b'{"state": "queued"}') if method == "PUT" else (200, result)

    request = make_request("img", "print(1)", output_bytes=output_bytes)
    return backend(node(answer)).run(request), request


def test_output_beyond_the_runs_cap_is_cut_and_flagged(
    hostile_node: Callable[[Answer], str],
) -> None:
    flood = done(stdout=b64(b"o" * 50_000), stderr=b64(b"e" * 50_000), error_message="m" * 5000)
    # The answer fits the read cap (3 x output_bytes + 64 KiB) but not the run's output cap.
    result, request = run_against(hostile_node, flood, output_bytes=40_000)
    assert result.error_kind is None
    assert result.stdout == b"o" * 40_000 and result.stdout_truncated
    assert result.stderr == b"e" * 40_000 and result.stderr_truncated
    assert len(result.error_message) == 2000
    assert result.handle == request.handle, "the node cannot rename the sandbox"


def test_output_within_the_cap_is_kept_whole(hostile_node: Callable[[Answer], str]) -> None:
    result, _ = run_against(hostile_node, done(stdout=b64(b"o" * 1024), stdout_truncated=False))
    assert result.stdout == b"o" * 1024 and not result.stdout_truncated


def test_an_answer_longer_than_the_read_cap_is_dropped(
    hostile_node: Callable[[Answer], str],
) -> None:
    # 1 KiB of output allowed: the answer may be at most 3 KiB + 64 KiB long.
    huge = done(stdout=b64(b"o" * (CONTROL_ANSWER_BYTES + 10_000)))
    result, _ = run_against(hostile_node, huge, output_bytes=1024)
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert "more than" in result.error_message and "answer was dropped" in result.error_message
    assert result.stdout == b""


@pytest.mark.parametrize(
    "field",
    [
        {"exit_code": "0"},
        {"exit_code": True},
        {"wall_time_ms": 1.5},
        {"peak_memory_bytes": "lots"},
        {"timed_out": "no"},
        {"stdout_truncated": 0},
        {"error_message": ["x"]},
        {"error_kind": "not-a-kind"},
        {"stdout": "not base64!"},
    ],
)
def test_fields_of_the_wrong_type_are_a_backend_error(
    hostile_node: Callable[[Answer], str], field: dict[str, Any]
) -> None:
    result, _ = run_against(hostile_node, done(**field))
    assert result.error_kind == ErrorKind.BACKEND_ERROR
    assert result.exit_code is None and result.stdout == b""


def test_a_huge_health_answer_counts_as_unhealthy(hostile_node: Callable[[Answer], str]) -> None:
    url = hostile_node(lambda method, path: (200, b"{}"))
    node = backend(url)
    assert node.health().ok
    node._call = lambda *args, **kwargs: RemoteBackend._call(  # type: ignore[method-assign]
        node, *args, **{**kwargs, "max_bytes": 8}
    )
    assert not node.health().ok


# -- the steps of a session


def session_against(
    node: Callable[[Answer], str], answers: list[bytes], *, compile_output_bytes: int = 0
) -> tuple[Recorder, list[tuple[str, str]]]:
    """Run a two-case session (with a compile step if given its output cap) on a node whose
    polls get ``answers`` in turn; return what the observer was told and every call the node
    got."""
    calls: list[tuple[str, str]] = []
    polls = iter(answers)

    def answer(method: str, path: str) -> tuple[int, bytes]:
        calls.append((method, path))
        if method == "PUT":
            return 202, b'{"state": "queued"}'
        if method == "DELETE":
            return 200, b'{"state": "done"}'
        return 200, next(polls, progress("running"))

    session = one_program_session("img", "print(1)", [b"a", b"b"], output_bytes=1024)
    if compile_output_bytes:
        compile_limits = replace(session.limits, output_bytes=compile_output_bytes)
        session = replace(session, compile=CompileStep(("cc",), compile_limits))
    recorder = Recorder()
    backend(node(answer)).run_session(session, recorder)
    return recorder, calls


def failure_of(told: Recorder) -> RunResult:
    """The one failure the observer was told of, last."""
    (failure,) = told.failures()
    assert failure.error_kind == ErrorKind.BACKEND_ERROR, failure
    assert told.told[-1][0] in ("compiled", "ended"), "nothing was told after the failure"
    return failure


def test_results_arriving_a_poll_at_a_time_are_told_in_order(
    hostile_node: Callable[[Answer], str],
) -> None:
    told, calls = session_against(
        hostile_node,
        [progress("running", case_entry(0)), progress("done", case_entry(1, exit_code=3))],
    )
    assert told.told == [("starting", 0), ("ended", 0), ("starting", 1), ("ended", 1)]
    assert [(r.exit_code, r.error_kind) for r in told.results.values()] == [(0, None), (3, None)]
    polls = [path for method, path in calls if method == "GET" and "/v1/sessions/" in path]
    assert [path.split("?")[1].split("&")[0] for path in polls] == ["after=0", "after=1"]
    assert "DELETE" not in [method for method, _ in calls], "a finished session is left be"


@pytest.mark.parametrize(
    ("answers", "problem"),
    [
        (
            [progress("done", case_entry(0), case_entry(1), case_entry(2))],
            "3 results for a session of 2 steps",
        ),
        (
            [progress("running", case_entry(0)), progress("done", case_entry(7))],
            "a result for case 7, which the session does not have",
        ),
        (
            [progress("done", case_entry(1), case_entry(0))],
            "a result for case 1, which came where case 0 was due",
        ),
        (
            [progress("done", {"step": "compile", "result": {"exit_code": 0}})],
            "a result for the compile step, which came where case 0 was due",
        ),
        (
            [progress("done", case_entry(0, error_kind="unavailable"), case_entry(1))],
            "results after case 0 ended the session",
        ),
        ([progress("done", case_entry(0))], "the end of the session before case 1 reported"),
        ([b'{"state": "finished", "results": []}'], "an answer that does not parse: state must"),
        ([b"not json"], "an answer that does not parse: "),
    ],
)
def test_a_node_that_breaks_the_protocol_fails_the_due_step_once_and_is_cancelled(
    hostile_node: Callable[[Answer], str], answers: list[bytes], problem: str
) -> None:
    told, calls = session_against(hostile_node, answers)
    message = failure_of(told).error_message
    assert "broke the protocol" in message and problem in message, message
    assert ("DELETE", calls[0][1]) in calls, "the session was cancelled on the node"


def compile_entry(stdout: bytes) -> dict[str, Any]:
    return {"step": "compile", "result": {"exit_code": 0, "stdout": b64(stdout)}}


def test_a_compile_step_is_told_first_then_each_case(
    hostile_node: Callable[[Answer], str],
) -> None:
    told, _ = session_against(
        hostile_node,
        [progress("done", compile_entry(b"built"), case_entry(0), case_entry(1))],
        compile_output_bytes=100,
    )
    assert told.told == [
        ("starting", 0),
        ("compiled", 0),
        ("ended", 0),
        ("starting", 1),
        ("ended", 1),
    ]


def test_a_compile_steps_output_is_held_to_its_own_cap(
    hostile_node: Callable[[Answer], str],
) -> None:
    """Its output beyond the compile step's cap is cut and flagged, and a compile step over
    its output limit failed: no case is told."""
    told, _ = session_against(
        hostile_node,
        [progress("done", compile_entry(b"c" * 50), case_entry(0), case_entry(1))],
        compile_output_bytes=10,
    )
    assert told.told == [("starting", 0), ("compiled", 0)]
    compile_result = told.compiled
    assert compile_result is not None
    assert compile_result.stdout == b"c" * 10 and compile_result.stdout_truncated


def test_a_compile_step_the_node_skips_is_a_protocol_error(
    hostile_node: Callable[[Answer], str],
) -> None:
    told, _ = session_against(
        hostile_node, [progress("done", case_entry(0), case_entry(1))], compile_output_bytes=100
    )
    assert told.told[-1][0] == "compiled", "the failure is the compile step's"
    assert "a result for case 0, which came where the compile step was due" in (
        failure_of(told).error_message
    )
