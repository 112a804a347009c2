"""The execution service's test harness: a stub backend, the platform's sessions, a signing Node."""

from __future__ import annotations

import dataclasses
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import requests

from execution_service.server import ExecutionService, ServiceConfig
from sandbox import signing, wire
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
    compiled,
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
    cpu_time_ms=9000,
)
BINARY = b"\x00\xff\xfe\x80 not utf-8 \x00"
GATE_TIMEOUT_S = 10


class StubBackend(ExecutionBackend):
    """Records what reaches it and runs a session's steps in order, like a backend with one
    sandbox per session. Each step waits at ``gate`` (open unless a test closes it), then
    ends with ``compile_answer(session)`` or ``answer(case request)``; ``cancel`` records the
    handle and opens the gate, and a step of a cancelled session ends ``CANCELLED``."""

    name = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Session] = []
        self.entered: queue.Queue[str] = queue.Queue()
        self.cancelled: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.answer: Callable[[RunRequest], RunResult] = echo
        self.compile_answer: Callable[[Session], RunResult] = lambda session: RunResult(
            exit_code=0, stdout=b"compiled", handle=session.handle
        )
        self.health_answer: Health | Exception = Health(ok=True, detail="stub ready")
        self.health_calls = 0

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        self.received.append(session)
        if not observer.case_starting(0, session.handle):
            return
        if session.compile is not None:
            result = self._wait(session, "compile") or self.compile_answer(session)
            if not observer.compile_ended(result) or not compiled(result):
                return
        for index in range(len(session.stdins)):
            if index > 0 and not observer.case_starting(index, session.handle):
                return
            result = self._wait(session, f"case {index}") or self.answer(
                session.case_request(index)
            )
            if not observer.case_ended(index, result):
                return

    def _wait(self, session: Session, step: str) -> RunResult | None:
        """Wait at the gate; the step's result if the session was cancelled, else None."""
        self.entered.put(f"{session.handle}: {step}")
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise AssertionError("the test never opened the gate")
        if session.handle in self.cancelled:
            return RunResult.failure(ErrorKind.CANCELLED, "cancelled", handle=session.handle)
        return None

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
    """A result made of the case's parts, so a test sees that each of them arrived."""
    return RunResult(
        exit_code=3,
        stdout=request.stdin + request.files.get("main.py", b""),
        stderr=",".join(sorted(request.files)).encode(),
        wall_time_ms=request.limits.wall_time_ms // 2,
        handle=request.handle,
    )


def make_session(handle: str = "run-1", **changes: Any) -> Session:
    fields: dict[str, Any] = {
        "execution_id": 7,
        "handle": handle,
        "image": "python:3.12",
        "command": ("python3", "main.py"),
        "files": {"main.py": b"print(1)\n", "blob": BINARY},
        "stdins": [b"in\x00put"],
        "policy": SandboxPolicy(limits=Limits(wall_time_ms=1000, memory_mb=64, output_bytes=100)),
        "labels": {"tenant": "a"},
    }
    fields.update(changes)
    return Session(**fields)


def body_of(session: Session) -> bytes:
    """The bytes the platform's client sends for ``session``."""
    return wire.dumps(wire.session_to_json(session))


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

    def put(self, session: Session, body: bytes | None = None) -> requests.Response:
        return self.call(
            "PUT", f"/v1/sessions/{session.handle}", body_of(session) if body is None else body
        )

    def get(self, session_id: str, query: str = "") -> requests.Response:
        return self.call("GET", f"/v1/sessions/{session_id}{query}")

    def delete(self, session_id: str) -> requests.Response:
        return self.call("DELETE", f"/v1/sessions/{session_id}")

    def finish(self, session_id: str) -> list[tuple[wire.Step, RunResult]]:
        """Long-poll until ``session_id`` is done; return the results of its steps."""
        response = self.get(session_id, "?wait=5")
        assert response.status_code == 200, response.text
        progress = wire.progress_from_json(response.json())
        assert progress.state == "done", progress
        return progress.results

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


def error_of(response: requests.Response) -> str:
    message: str = response.json()["error"]
    return message
