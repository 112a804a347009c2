"""The execution service's HTTP server refusing sessions over its caps, capacity or body size."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from sandbox import wire
from sandbox.contract import CompileStep
from sandbox.policy import Limits, SandboxPolicy

from .stub_service import CAPS, Node, body_of, error_of, make_session

# -- what a session may ask for


def test_limits_at_the_caps_are_accepted(node: Node) -> None:
    answer = node.put(make_session(policy=SandboxPolicy(limits=CAPS)))
    assert answer.status_code == 202, answer.text
    node.finish("run-1")
    assert node.backend.received[0].limits == CAPS


@pytest.mark.parametrize("name", wire.LIMIT_FIELDS)
def test_each_limit_above_its_cap_is_refused(node: Node, name: str) -> None:
    cap = getattr(CAPS, name)
    over = cap + 1 if isinstance(cap, int) else cap + 0.5
    limits = dataclasses.replace(CAPS, **{name: over})
    answer = node.put(make_session(policy=SandboxPolicy(limits=limits)))
    assert answer.status_code == 400
    assert error_of(answer) == (
        f"limits above this execution service's caps: {name}={over} (cap {cap})"
    )
    assert node.service.sessions == {} and node.backend.received == []


@pytest.mark.parametrize("name", wire.LIMIT_FIELDS)
def test_each_compile_limit_above_its_cap_is_refused(node: Node, name: str) -> None:
    cap = getattr(CAPS, name)
    over = cap + 1 if isinstance(cap, int) else cap + 0.5
    compile_step = CompileStep(("cc",), dataclasses.replace(CAPS, **{name: over}))
    answer = node.put(make_session(compile=compile_step))
    assert answer.status_code == 400
    assert error_of(answer) == (
        f"limits above this execution service's caps: compile.{name}={over} (cap {cap})"
    )
    assert node.service.sessions == {} and node.backend.received == []


def test_a_compile_step_at_the_caps_is_accepted(node: Node) -> None:
    answer = node.put(make_session(compile=CompileStep(("cc",), CAPS)))
    assert answer.status_code == 202, answer.text
    node.finish("run-1")
    compile_step = node.backend.received[0].compile
    assert compile_step is not None and compile_step.limits == CAPS


def test_every_limit_above_its_cap_is_named(node: Node) -> None:
    limits = dataclasses.replace(CAPS, wall_time_ms=60_000, pids=1000)
    answer = node.put(make_session(policy=SandboxPolicy(limits=limits)))
    assert answer.status_code == 400
    assert error_of(answer) == (
        "limits above this execution service's caps: "
        "wall_time_ms=60000 (cap 5000), pids=1000 (cap 100)"
    )


def test_the_sessions_and_the_compile_steps_limits_are_named_together(node: Node) -> None:
    limits = dataclasses.replace(CAPS, memory_mb=1024)
    compiling = Limits(wall_time_ms=9000, memory_mb=64, output_bytes=10)
    answer = node.put(
        make_session(policy=SandboxPolicy(limits=limits), compile=CompileStep(("cc",), compiling))
    )
    assert answer.status_code == 400
    assert error_of(answer) == (
        "limits above this execution service's caps: "
        "memory_mb=1024 (cap 256), compile.wall_time_ms=9000 (cap 5000)"
    )


def test_cases_up_to_max_cases_are_accepted_and_one_more_is_refused(
    start: Callable[..., Node],
) -> None:
    node = start(max_cases=3)
    assert node.put(make_session("three", stdins=[b""] * 3)).status_code == 202
    refused = node.put(make_session("four", stdins=[b""] * 4))
    assert refused.status_code == 400
    assert error_of(refused) == "4 cases, above this execution service's cap of 3"
    assert list(node.service.sessions) == ["three"]


def test_stdin_is_capped_across_all_the_cases(start: Callable[..., Node]) -> None:
    node = start(max_stdin_bytes=10)
    assert node.put(make_session("ten", stdins=[b"12345", b"", b"12345"])).status_code == 202
    refused = node.put(make_session("eleven", stdins=[b"12345", b"123456"]))
    assert refused.status_code == 400
    assert error_of(refused) == "11 bytes of stdin, above this execution service's cap of 10"
    assert list(node.service.sessions) == ["ten"]


def test_network_is_refused_unless_the_service_allows_it(start: Callable[..., Node]) -> None:
    closed = start()
    session = make_session(policy=SandboxPolicy(limits=CAPS, network=True))
    refused = closed.put(session)
    assert refused.status_code == 400
    assert error_of(refused) == "this execution service does not allow network"
    assert closed.backend.received == []

    open_ = start(allow_network=True)
    assert open_.put(session).status_code == 202
    open_.finish("run-1")
    assert open_.backend.received[0].policy.network is True


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "invalid session: Expecting property name enclosed in double quotes"),
        (b"", "invalid session: Expecting value"),
        (b"[]", "invalid session: the body must be a JSON object"),
        (
            b'{"limits":{"wall_time_ms":1,"memory_mb":1,"output_bytes":1}}',
            "invalid session: missing field 'image'",
        ),
        (b"\xff\xfe", "invalid session: "),
    ],
)
def test_a_malformed_session_is_400(node: Node, body: bytes, error: str) -> None:
    answer = node.put(make_session(), body)
    assert answer.status_code == 400
    assert error_of(answer).startswith(error)
    assert node.service.sessions == {}


@pytest.mark.parametrize("session_id", ["-bad", "a" * 129, "a%2Fb", ".hidden", "caf%C3%A9"])
def test_a_bad_session_id_is_400(node: Node, session_id: str) -> None:
    answer = node.call("PUT", f"/v1/sessions/{session_id}", body_of(make_session()))
    assert answer.status_code == 400
    assert error_of(answer) == "bad session id"
    assert node.service.sessions == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/health"),
        ("POST", "/v1/health"),
        ("POST", "/v1/sessions/run-1"),
        ("PUT", "/v1/runs/run-1"),
        ("POST", "/v1/sessions/run-1/cancel"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/run-1/results"),
    ],
)
def test_an_unknown_route_is_404(node: Node, method: str, path: str) -> None:
    answer = node.call(method, path)
    assert answer.status_code == 404
    assert error_of(answer) == f"no route for {method} {path}"


def test_a_nan_limit_does_not_slip_under_the_caps(node: Node) -> None:
    body = body_of(make_session()).replace(b'"wall_time_ms":1000', b'"wall_time_ms":NaN')
    assert b"NaN" in body
    answer = node.put(make_session(), body)
    assert answer.status_code == 400, answer.text
    assert node.backend.received == []


# -- capacity


def test_at_capacity_a_new_session_is_429_with_retry_after(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=1)
    node.backend.gate.clear()
    assert node.put(make_session("first")).status_code == 202
    busy = node.put(make_session("second"))
    assert busy.status_code == 429
    assert busy.headers["Retry-After"] == "1"
    assert error_of(busy) == "all 1 sandbox slots are busy"
    assert "second" not in node.service.sessions
    # A retry of the session that holds the slot is not a new one: it is answered, not refused.
    assert node.put(make_session("first")).status_code == 200

    node.backend.gate.set()
    node.finish("first")
    assert node.put(make_session("second")).status_code == 202
    node.finish("second")
    assert [r.handle for r in node.backend.received] == ["first", "second"]


def test_capacity_counts_queued_sessions_too(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=2)
    node.backend.gate.clear()
    assert node.put(make_session("a")).status_code == 202
    assert node.put(make_session("b")).status_code == 202
    assert node.put(make_session("c")).status_code == 429
    assert node.health()["in_use"] == 2


# -- bodies


def test_a_body_of_max_body_bytes_is_read_and_one_byte_more_is_413(
    start: Callable[..., Node],
) -> None:
    node = start(max_body_bytes=4096)
    body = body_of(make_session())
    padded = body + b" " * (4096 - len(body))  # JSON allows trailing whitespace
    assert node.put(make_session(), padded).status_code == 202
    too_big = node.put(make_session("run-2"), padded + b" ")
    assert too_big.status_code == 413
    assert error_of(too_big) == "request body too large"
    assert list(node.service.sessions) == ["run-1"]


def test_a_huge_claimed_length_is_413_at_once_and_the_connection_closed(
    start: Callable[..., Node],
) -> None:
    """The body is not read: the answer comes before any of it is sent, and the server
    hangs up rather than read a gigabyte to reach the next request."""
    node = start(max_body_bytes=4096)
    answer = node.raw(
        b"PUT /v1/sessions/run-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b'{"error":"request body too large"}')


@pytest.mark.parametrize(
    ("length", "status", "error"),
    [
        (b"-1", b"413", b"request body too large"),
        (b"lots", b"400", b"bad Content-Length"),
    ],
)
def test_a_bad_content_length_is_refused(
    node: Node, length: bytes, status: bytes, error: bytes
) -> None:
    answer = node.raw(
        b"PUT /v1/sessions/run-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: " + length + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert answer.endswith(b'{"error":"' + error + b'"}')
    assert node.service.sessions == {}
