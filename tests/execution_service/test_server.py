"""The execution service's HTTP API (``execution_service.server``), served in process over a
stub backend: signing at the door, caps, capacity, idempotent submission, long polls,
cancel, health, retention and body limits. No Docker: the sandbox is not under test here."""

from __future__ import annotations

import dataclasses
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from execution_service import VERSION, server
from execution_service.server import ExecutionService, ServiceConfig
from sandbox import signing, wire
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)
from sandbox.policy import Limits, SandboxPolicy

SECRET = "service-test-secret-" + "x" * 20
CAPS = Limits(
    wall_time_ms=5000,
    memory_mb=256,
    output_bytes=65536,
    cpus=2.0,
    pids=100,
    scratch_mb=32,
    open_files=128,
    file_size_mb=32,
)
BINARY = b"\x00\xff\xfe\x80 not utf-8 \x00"
GATE_TIMEOUT_S = 10


class StubBackend(ExecutionBackend):
    """Records what reaches it. ``run`` waits at ``gate`` (open unless a test closes it) and
    answers with ``answer(request)``; ``cancel`` records the handle and opens the gate."""

    name = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[RunRequest] = []
        self.entered: queue.Queue[str] = queue.Queue()
        self.cancelled: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.answer: Callable[[RunRequest], RunResult] = echo
        self.health_answer: Health | Exception = Health(ok=True, detail="stub ready")
        self.health_calls = 0

    def run(self, request: RunRequest) -> RunResult:
        self.received.append(request)
        self.entered.put(request.handle)
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        if request.handle in self.cancelled:
            return RunResult.failure(ErrorKind.CANCELLED, "cancelled", handle=request.handle)
        return self.answer(request)

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.gate.set()

    def health(self) -> Health:
        self.health_calls += 1
        if isinstance(self.health_answer, Exception):
            raise self.health_answer
        return self.health_answer

    def describe(self) -> Isolation:
        return Isolation()


def echo(request: RunRequest) -> RunResult:
    """A result made of the request's parts, so a test sees that each of them arrived."""
    return RunResult(
        exit_code=3,
        stdout=request.stdin + request.files.get("main.py", b""),
        stderr=",".join(sorted(request.files)).encode(),
        wall_time_ms=request.limits.wall_time_ms // 2,
        handle=request.handle,
    )


def make_request(handle: str = "run-1", **changes: Any) -> RunRequest:
    fields: dict[str, Any] = {
        "execution_id": 7,
        "handle": handle,
        "image": "python:3.12",
        "command": ("python3", "main.py"),
        "files": {"main.py": b"print(1)\n", "blob": BINARY},
        "stdin": b"in\x00put",
        "policy": SandboxPolicy(limits=Limits(wall_time_ms=1000, memory_mb=64, output_bytes=100)),
        "labels": {"tenant": "a"},
    }
    fields.update(changes)
    return RunRequest(**fields)


def body_of(request: RunRequest) -> bytes:
    """The bytes the platform's client sends for ``request``."""
    return wire.dumps(wire.request_to_json(request))


def config(**changes: Any) -> ServiceConfig:
    return ServiceConfig(**{"secret": SECRET, "caps": CAPS, **changes})


@dataclasses.dataclass
class Node:
    """A running service, its backend, and a client that signs like the remote backend."""

    service: ExecutionService
    backend: StubBackend
    url: str
    host: str
    port: int

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        sent = signing.sign(secret, method, path, body) if headers is None else headers
        return requests.request(method, self.url + path, data=body, headers=sent, timeout=10)

    def put(self, request: RunRequest, body: bytes | None = None) -> requests.Response:
        return self.call(
            "PUT", f"/v1/runs/{request.handle}", body_of(request) if body is None else body
        )

    def get(self, run_id: str, wait_s: float | None = None) -> requests.Response:
        query = "" if wait_s is None else f"?wait={wait_s}"
        return self.call("GET", f"/v1/runs/{run_id}{query}")

    def finish(self, run_id: str) -> dict[str, Any]:
        """Long-poll until ``run_id`` is done; return its answer."""
        response = self.get(run_id, wait_s=5)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        assert data["status"] == "done", data
        return data

    def health(self) -> dict[str, Any]:
        response = self.call("GET", "/v1/health")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def raw(self, head: bytes) -> bytes:
        """Send ``head`` on a fresh connection; everything read until the server closes it."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(head)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received


@pytest.fixture
def start() -> Iterator[Callable[..., Node]]:
    """Start a service with ``ServiceConfig`` changes; everything stops after the test."""
    started: list[tuple[Node, threading.Thread, Any]] = []

    def start(**changes: Any) -> Node:
        backend = StubBackend()
        service = ExecutionService(backend, config(**changes))
        httpd = service.make_server("127.0.0.1", 0)
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        host, port = "127.0.0.1", httpd.server_port
        node = Node(service, backend, f"http://{host}:{port}", host, port)
        started.append((node, thread, httpd))
        return node

    yield start
    for node, thread, httpd in started:
        node.backend.gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        node.service.pool.shutdown(wait=True)


@pytest.fixture
def node(start: Callable[..., Node]) -> Node:
    return start()


def error_of(response: requests.Response) -> str:
    message: str = response.json()["error"]
    return message


# -- a run, start to finish


def test_a_signed_run_is_accepted_and_its_result_returned(node: Node) -> None:
    node.backend.gate.clear()
    request = make_request()
    accepted = node.put(request)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["run_id"] == "run-1"
    assert accepted.json()["status"] in ("queued", "running")
    assert "result" not in accepted.json(), "no result before the run is done"
    assert node.backend.entered.get(timeout=5) == "run-1"
    pending = node.get("run-1")
    assert pending.status_code == 200
    assert pending.json() == {"run_id": "run-1", "status": "running"}

    node.backend.gate.set()
    done = node.finish("run-1")
    assert wire.result_from_json(done["result"]) == RunResult(
        exit_code=3,
        stdout=b"in\x00put" + b"print(1)\n",
        stderr=b"blob,main.py",
        wall_time_ms=500,
        handle="run-1",
    )
    # The backend got the request as the platform built it, bytes and all.
    assert node.backend.received == [request]


def test_a_long_poll_returns_as_soon_as_the_run_is_done(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    node.backend.entered.get(timeout=5)
    threading.Timer(0.2, node.backend.gate.set).start()
    began = time.monotonic()
    assert node.get("run-1", wait_s=20).json()["status"] == "done"
    assert time.monotonic() - began < 5, "the poll waited for its full length"


def test_a_long_poll_is_cut_at_max_wait(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_WAIT_S", 0.2)
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    began = time.monotonic()
    answer = node.get("run-1", wait_s=3600)
    assert answer.status_code == 200
    assert answer.json()["status"] in ("queued", "running")
    assert 0.15 < time.monotonic() - began < 5


@pytest.mark.parametrize("wait", ["soon", "1s", "0x10"])
def test_a_wait_that_is_not_a_number_is_refused(node: Node, wait: str) -> None:
    assert node.put(make_request()).status_code == 202
    answer = node.call("GET", f"/v1/runs/run-1?wait={wait}")
    assert answer.status_code == 400
    assert error_of(answer) == "wait must be a number"


def test_an_unknown_run_is_404(node: Node) -> None:
    answer = node.get("never-submitted")
    assert answer.status_code == 404
    assert error_of(answer) == "no run never-submitted"


# -- idempotent submission


def test_the_same_body_again_returns_the_existing_run(node: Node) -> None:
    node.backend.gate.clear()
    request = make_request()
    assert node.put(request).status_code == 202
    again = node.put(request)
    assert again.status_code == 200
    assert again.json()["run_id"] == "run-1"
    node.backend.gate.set()
    node.finish("run-1")
    # And after it is done: still the same run, with its result, never run twice.
    done_again = node.put(request)
    assert done_again.status_code == 200
    assert done_again.json()["status"] == "done"
    assert done_again.json()["result"]["exit_code"] == 3
    assert len(node.backend.received) == 1


def test_a_different_body_under_the_same_id_is_409(node: Node) -> None:
    assert node.put(make_request()).status_code == 202
    other = node.put(make_request(stdin=b"other input"))
    assert other.status_code == 409
    assert error_of(other) == "run run-1 exists with a different request"
    node.finish("run-1")
    assert [r.stdin for r in node.backend.received] == [b"in\x00put"]


def test_the_same_run_spelt_differently_is_a_different_body(node: Node) -> None:
    """Idempotency compares the exact bytes, which the platform's client keeps stable."""
    body = body_of(make_request())
    assert node.put(make_request(), body).status_code == 202
    assert node.put(make_request(), body + b" ").status_code == 409


# -- signing at the door


ROUTES = [
    ("GET", "/v1/health"),
    ("PUT", "/v1/runs/run-1"),
    ("GET", "/v1/runs/run-1?wait=1"),
    ("POST", "/v1/runs/run-1/cancel"),
    ("GET", "/v1/no-such-route"),
    ("GET", "/v1/runs/-bad-id"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_an_unsigned_request_is_401_before_anything_else(
    node: Node, method: str, path: str
) -> None:
    """Not 400 for the junk body, not 404 for the route: nothing is revealed unsigned."""
    answer = node.call(method, path, b"{not json", headers={})
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: missing signature headers"
    assert node.backend.health_calls == 0
    assert node.backend.received == [] and node.backend.cancelled == []
    assert node.service.runs == {}


def test_a_request_signed_with_another_secret_is_401(node: Node) -> None:
    answer = node.call("PUT", "/v1/runs/run-1", body_of(make_request()), secret="y" * 40)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: bad signature"
    assert node.service.runs == {}


@pytest.mark.parametrize(
    ("signed_for", "sent"),
    [
        (("PUT", "/v1/runs/run-2", b"{}"), ("PUT", "/v1/runs/run-1", b"{}")),
        (("PUT", "/v1/runs/run-1", b"{}"), ("PUT", "/v1/runs/run-1", b"{ }")),
        (("GET", "/v1/runs/run-1?wait=0"), ("GET", "/v1/runs/run-1?wait=30")),
        (("GET", "/v1/runs/run-1/cancel"), ("POST", "/v1/runs/run-1/cancel")),
    ],
)
def test_a_signature_for_another_request_is_401(
    node: Node, signed_for: tuple[Any, ...], sent: tuple[Any, ...]
) -> None:
    """Method, path, query string and body are all covered by the signature."""
    method, path, *body = signed_for
    headers = signing.sign(SECRET, method, path, body[0] if body else b"")
    method, path, *body = sent
    answer = node.call(method, path, body[0] if body else b"", headers=headers)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: bad signature"


def signed_at(timestamp: int, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    nonce = "0123456789abcdef"
    return {
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.NONCE_HEADER: nonce,
        signing.SIGNATURE_HEADER: signing._signature(
            SECRET, method, path, str(timestamp), nonce, body
        ),
    }


@pytest.mark.parametrize("offset", [-120, 120])
def test_a_stale_or_future_timestamp_is_401(node: Node, offset: int) -> None:
    headers = signed_at(int(time.time()) + offset, "GET", "/v1/health")
    answer = node.call("GET", "/v1/health", headers=headers)
    assert answer.status_code == 401
    assert error_of(answer) == "unauthenticated: signature timestamp outside the 60 s window"
    assert node.backend.health_calls == 0


def test_a_timestamp_within_the_skew_is_accepted(node: Node) -> None:
    headers = signed_at(int(time.time()) - 30, "GET", "/v1/health")
    assert node.call("GET", "/v1/health", headers=headers).status_code == 200


def test_a_replayed_request_is_401_even_for_an_idempotent_put(node: Node) -> None:
    body = body_of(make_request())
    headers = signing.sign(SECRET, "PUT", "/v1/runs/run-1", body)
    assert node.call("PUT", "/v1/runs/run-1", body, headers=headers).status_code == 202
    replay = node.call("PUT", "/v1/runs/run-1", body, headers=headers)
    assert replay.status_code == 401
    assert error_of(replay) == "unauthenticated: replayed request (nonce already seen)"
    # Signed afresh, the same body is the idempotent retry it should be.
    assert node.put(make_request()).status_code == 200


def test_a_replayed_cancel_is_401(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    headers = signing.sign(SECRET, "POST", "/v1/runs/run-1/cancel")
    assert node.call("POST", "/v1/runs/run-1/cancel", headers=headers).status_code == 200
    replay = node.call("POST", "/v1/runs/run-1/cancel", headers=headers)
    assert replay.status_code == 401
    assert node.backend.cancelled == ["run-1"]


# -- what a run may ask for


def test_limits_at_the_caps_are_accepted(node: Node) -> None:
    answer = node.put(make_request(policy=SandboxPolicy(limits=CAPS)))
    assert answer.status_code == 202, answer.text
    node.finish("run-1")
    assert node.backend.received[0].limits == CAPS


@pytest.mark.parametrize("name", wire.LIMIT_FIELDS)
def test_each_limit_above_its_cap_is_refused(node: Node, name: str) -> None:
    cap = getattr(CAPS, name)
    over = cap + 1 if isinstance(cap, int) else cap + 0.5
    limits = dataclasses.replace(CAPS, **{name: over})
    answer = node.put(make_request(policy=SandboxPolicy(limits=limits)))
    assert answer.status_code == 400
    assert error_of(answer) == (
        f"limits above this execution service's caps: {name}={over} (cap {cap})"
    )
    assert node.service.runs == {} and node.backend.received == []


def test_every_limit_above_its_cap_is_named(node: Node) -> None:
    limits = dataclasses.replace(CAPS, wall_time_ms=60_000, pids=1000)
    answer = node.put(make_request(policy=SandboxPolicy(limits=limits)))
    assert answer.status_code == 400
    assert error_of(answer) == (
        "limits above this execution service's caps: "
        "wall_time_ms=60000 (cap 5000), pids=1000 (cap 100)"
    )


def test_network_is_refused_unless_the_service_allows_it(start: Callable[..., Node]) -> None:
    closed = start()
    request = make_request(policy=SandboxPolicy(limits=CAPS, network=True))
    refused = closed.put(request)
    assert refused.status_code == 400
    assert error_of(refused) == "this execution service does not allow network"
    assert closed.backend.received == []

    open_ = start(allow_network=True)
    assert open_.put(request).status_code == 202
    open_.finish("run-1")
    assert open_.backend.received[0].policy.network is True


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "invalid run: Expecting property name enclosed in double quotes"),
        (b"", "invalid run: Expecting value"),
        (b"[]", "invalid run: the body must be a JSON object"),
        (b'{"limits":{"wall_time_ms":1,"memory_mb":1,"output_bytes":1}}', "invalid run: missing"),
        (b"\xff\xfe", "invalid run: "),
    ],
)
def test_a_malformed_run_is_400(node: Node, body: bytes, error: str) -> None:
    answer = node.put(make_request(), body)
    assert answer.status_code == 400
    assert error_of(answer).startswith(error)
    assert node.service.runs == {}


@pytest.mark.parametrize("run_id", ["-bad", "a" * 129, "a%2Fb", ".hidden", "caf%C3%A9"])
def test_a_bad_run_id_is_400(node: Node, run_id: str) -> None:
    answer = node.call("PUT", f"/v1/runs/{run_id}", body_of(make_request()))
    assert answer.status_code == 400
    assert error_of(answer) == "bad run id"
    assert node.service.runs == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/health"),
        ("POST", "/v1/health"),
        ("DELETE", "/v1/runs/run-1"),
        ("GET", "/v1/runs/run-1/cancel"),
        ("PUT", "/v1/runs/run-1/cancel"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/run-1/result"),
    ],
)
def test_an_unknown_route_is_404(node: Node, method: str, path: str) -> None:
    answer = node.call(method, path)
    assert answer.status_code == 404
    assert error_of(answer) == f"no route for {method} {path}"


# -- capacity


def test_at_capacity_a_new_run_is_429_with_retry_after(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=1)
    node.backend.gate.clear()
    assert node.put(make_request("first")).status_code == 202
    busy = node.put(make_request("second"))
    assert busy.status_code == 429
    assert busy.headers["Retry-After"] == "1"
    assert error_of(busy) == "all 1 sandbox slots are busy"
    assert "second" not in node.service.runs
    # A retry of the run that holds the slot is not a new run: it is answered, not refused.
    assert node.put(make_request("first")).status_code == 200

    node.backend.gate.set()
    node.finish("first")
    assert node.put(make_request("second")).status_code == 202
    node.finish("second")
    assert [r.handle for r in node.backend.received] == ["first", "second"]


def test_capacity_counts_queued_runs_too(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=2)
    node.backend.gate.clear()
    assert node.put(make_request("a")).status_code == 202
    assert node.put(make_request("b")).status_code == 202
    assert node.put(make_request("c")).status_code == 429
    assert node.health()["in_use"] == 2


# -- cancel


def test_cancel_reaches_the_backend_with_the_handle(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request("to-stop")).status_code == 202
    node.backend.entered.get(timeout=5)
    answer = node.call("POST", "/v1/runs/to-stop/cancel")
    assert answer.status_code == 200
    assert answer.json()["run_id"] == "to-stop"
    assert node.backend.cancelled == ["to-stop"]
    result = wire.result_from_json(node.finish("to-stop")["result"])
    assert result.error_kind is ErrorKind.CANCELLED


def test_cancelling_a_finished_run_does_not_touch_the_backend(node: Node) -> None:
    assert node.put(make_request()).status_code == 202
    node.finish("run-1")
    answer = node.call("POST", "/v1/runs/run-1/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "done"
    assert answer.json()["result"]["exit_code"] == 3
    assert node.backend.cancelled == []


def test_cancelling_an_unknown_run_is_404(node: Node) -> None:
    answer = node.call("POST", "/v1/runs/nobody/cancel")
    assert answer.status_code == 404
    assert node.backend.cancelled == []


# -- health


def test_health_reports_the_backends_health_and_the_capacity(start: Callable[..., Node]) -> None:
    node = start(max_concurrent_per_service=3)
    node.backend.health_answer = Health(ok=False, detail="engine down", version="27.1")
    assert node.health() == {
        "ok": False,
        "detail": "engine down",
        "backend": "stub",
        "backend_version": "27.1",
        "version": VERSION,
        "capacity": 3,
        "in_use": 0,
        "runs_started": 0,
        "caps": dataclasses.asdict(CAPS),
    }
    assert node.backend.health_calls == 1, "health asks the backend every time"


def test_health_counts_runs_in_use_and_started(node: Node) -> None:
    node.backend.gate.clear()
    assert node.put(make_request("a")).status_code == 202
    node.backend.entered.get(timeout=5)
    during = node.health()
    assert (during["in_use"], during["runs_started"]) == (1, 1)
    node.backend.gate.set()
    node.finish("a")
    assert node.put(make_request("b")).status_code == 202
    node.finish("b")
    after = node.health()
    assert (after["in_use"], after["runs_started"]) == (0, 2)


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
        assert node.put(make_request("boom")).status_code == 202
        result = wire.result_from_json(node.finish("boom")["result"])
    assert result == RunResult.failure(
        ErrorKind.BACKEND_ERROR, "execution service error: engine exploded", handle="boom"
    )
    assert [r.getMessage() for r in caplog.records] == ["backend raised on run boom"]
    node.backend.answer = echo
    assert node.put(make_request("next")).status_code == 202, "the slot was given back"
    assert node.finish("next")["result"]["exit_code"] == 3


# -- retention


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_finished_run_is_forgotten_after_retention_s(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=600)
    assert node.put(make_request()).status_code == 202
    node.finish("run-1")
    clock.now += 600
    assert node.get("run-1").status_code == 200, "kept for retention_s inclusive"
    clock.now += 0.5
    assert node.get("run-1").status_code == 404
    # The id is free again: a different run under it is new, not a conflict.
    assert node.put(make_request(stdin=b"new")).status_code == 202


def test_a_run_in_flight_is_never_forgotten(
    start: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(server, "time", clock)
    node = start(retention_s=1, retention_count=0)
    node.backend.gate.clear()
    assert node.put(make_request()).status_code == 202
    clock.now += 3600
    assert node.get("run-1").status_code == 200
    # The poll that was waiting when the run finished gets the result; the next request
    # forgets it (a run that finished before its first poll would be gone already).
    threading.Timer(0.3, node.backend.gate.set).start()
    assert node.finish("run-1")["result"]["exit_code"] == 3
    assert node.get("run-1").status_code == 404


def test_at_most_retention_count_finished_runs_are_kept(start: Callable[..., Node]) -> None:
    node = start(retention_count=2)
    for run_id in ("r1", "r2", "r3"):
        assert node.put(make_request(run_id)).status_code == 202
        node.finish(run_id)
    assert node.get("r1").status_code == 404, "the oldest goes first"
    assert node.get("r2").status_code == 200
    assert node.get("r3").status_code == 200
    assert list(node.service.runs) == ["r2", "r3"]


# -- bodies


def test_a_body_of_max_body_bytes_is_read_and_one_byte_more_is_413(
    start: Callable[..., Node],
) -> None:
    node = start(max_body_bytes=4096)
    body = body_of(make_request())
    padded = body + b" " * (4096 - len(body))  # JSON allows trailing whitespace
    assert node.put(make_request(), padded).status_code == 202
    too_big = node.put(make_request("run-2"), padded + b" ")
    assert too_big.status_code == 413
    assert error_of(too_big) == "request body too large"
    assert list(node.service.runs) == ["run-1"]


def test_a_huge_claimed_length_is_413_at_once_and_the_connection_closed(
    start: Callable[..., Node],
) -> None:
    """The body is not read: the answer comes before any of it is sent, and the server
    hangs up rather than read a gigabyte to reach the next request."""
    node = start(max_body_bytes=4096)
    answer = node.raw(
        b"PUT /v1/runs/run-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
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
        b"PUT /v1/runs/run-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: " + length + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert answer.endswith(b'{"error":"' + error + b'"}')
    assert node.service.runs == {}


# -- the platform's client


def test_the_platforms_remote_backend_runs_through_this_server(node: Node) -> None:
    """The client and the server agree on paths, signing and the wire without Docker."""
    from executions.backends.remote import RemoteBackend

    client = RemoteBackend(urls=[node.url], secret=SECRET, poll_wait_s=1, grace_s=5)
    request = make_request("from-platform")
    result = client.run(request)
    assert result == echo(request)
    assert node.backend.received == [request]
    assert client.health().ok is True


def test_a_nan_limit_does_not_slip_under_the_caps(node: Node) -> None:
    body = body_of(make_request()).replace(b'"wall_time_ms":1000', b'"wall_time_ms":NaN')
    assert b"NaN" in body
    answer = node.put(make_request(), body)
    assert answer.status_code == 400, answer.text
    assert node.backend.received == []
