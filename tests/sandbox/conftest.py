"""Fixtures for the Docker runner's tests: the socket proxy in front of the real engine.

The engine, the runtime image and the slot directory are shared with the platform's backend
tests and live in ``tests/conftest.py``. A test that needs a real part (engine, image,
HAProxy) skips with the reason when the part is missing here, and fails instead when ``CI``
is set: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_real

PROXY_CONFIG = (
    Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "docker-socket-proxy.cfg"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def docker_proxy_url(
    require_docker: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real HAProxy with the shipped config on a loopback port, in front of the engine."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        require_real("HAProxy", "not installed (apt-get install haproxy)")
    base_url = require_docker["base_url"]
    if not base_url.startswith("unix://"):
        require_real("A local engine socket", f"the proxy test cannot front {base_url}")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    env = {
        **os.environ,
        "DOCKER_PROXY_ADDR": "127.0.0.1",
        "DOCKER_PROXY_PORT": str(port),
        "DOCKER_SOCKET": base_url.removeprefix("unix://"),
    }
    with open(log_path, "wb") as log:
        proxy = subprocess.Popen(
            [haproxy, "-f", str(PROXY_CONFIG), "-db"], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proxy.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"haproxy did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
