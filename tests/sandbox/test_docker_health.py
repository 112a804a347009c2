"""DockerBackend.health() while the engine shuts down: it says no once the engine accepts no
new connection, though it still answers on those it accepted before.

A real engine shutting down cannot be had here without stopping one (the fault suite's
``engine-restart`` does, on an engine of its own); this stands in for it: an HTTP server on a
unix socket answering the three calls health() makes, whose listener is then closed while the
connections it accepted keep being served, as dockerd does while it waits for its containers.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.docker import DockerBackend


class EngineHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client pools the connection

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/_ping"):
            body = b"OK"
        elif self.path.endswith("/version"):
            body = json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode()
        elif "/containers/json" in self.path:
            body = b"[]"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "docker.sock"
    server = Engine(str(path), EngineHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, path
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_that_accepts_no_new_connection_is_not_healthy(
    engine: tuple[Engine, Path], tmp_path: Path
) -> None:
    server, path = engine
    backend = DockerBackend(base_url=f"unix://{path}", lock_dir=str(tmp_path / "slots"))
    healthy = backend.health()
    assert healthy.ok, healthy.detail
    assert healthy.version == "20.10.24"

    # The engine shuts down: its socket is gone, what it accepted is still served.
    server.shutdown()
    server.socket.close()
    path.unlink()
    shutting_down = backend.health()
    assert not shutting_down.ok
    assert "did not answer" in shutting_down.detail
