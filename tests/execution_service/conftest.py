"""Fixtures of the execution service's tests: services served in process over a stub backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from execution_service.server import ExecutionService

from .stub_service import Node, StubBackend, config


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
