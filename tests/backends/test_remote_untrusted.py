"""The remote backend does not trust an execution node's answers: a compromised node cannot
make the platform store more output than the run allowed, read an endless answer, or pass off
fields of the wrong type. The node here is a small HTTP server that answers what it likes;
no Docker is needed."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from executions.backends.remote import CONTROL_ANSWER_BYTES, RemoteBackend
from sandbox.contract import ErrorKind
from tests.sandbox.conformance import make_request

SECRET = "s" * 40
Answer = Callable[[str, str], tuple[int, bytes]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def done(**result: Any) -> bytes:
    fields = {"exit_code": 0, "stdout": "", "stderr": "", "handle": "x", **result}
    return json.dumps({"status": "done", "result": fields}).encode()


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

            do_GET = do_PUT = do_POST = _reply

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
        return (202, b'{"status": "running"}') if method == "PUT" else (200, result)

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
