"""The execution service's test harness: a stub backend, the platform's requests, a signing Node."""

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


def error_of(response: requests.Response) -> str:
    message: str = response.json()["error"]
    return message
