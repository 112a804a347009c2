"""Fixtures for backend tests: a real Docker engine, the runtime image and the socket proxy.

A test that needs a real part (engine, image, HAProxy) skips with the reason when the part
is missing here, and fails instead when ``CI`` is set: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_real

RUNTIME_IMAGE = "evalplatform/python:3.11"
PROXY_CONFIG = (
    Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "docker-socket-proxy.cfg"
)


def _direct_engine_options() -> dict[str, Any]:
    return {"base_url": os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"}


@pytest.fixture(scope="session")
def require_docker() -> dict[str, Any]:
    """Options reaching the Docker engine directly; skip (fail in CI) if it does not answer."""
    try:
        from sandbox.docker import DockerBackend
    except ImportError as exc:
        require_real("The Docker SDK", str(exc))
    options = _direct_engine_options()
    health = DockerBackend(**options).health()
    if not health.ok:
        require_real("A Docker engine", f"{health.detail} (run scripts/start-dockerd.sh)")
    return options


@pytest.fixture(scope="session")
def runtime_image(require_docker: dict[str, Any]) -> str:
    """The Python runtime image, built once (offline when no registry answers) and reused."""
    from executions.runtime_images import RuntimeImageError, ensure_runtime_image
    from sandbox.docker import DockerBackend

    try:
        ensure_runtime_image(
            RUNTIME_IMAGE,
            mode=os.environ.get("EVALPLATFORM_IMAGE_BUILD", "auto"),
            backend=DockerBackend(**require_docker),
            log=lambda line: None,
        )
    except RuntimeImageError as exc:
        require_real(f"The runtime image {RUNTIME_IMAGE}", str(exc))
    return RUNTIME_IMAGE


@pytest.fixture(scope="session")
def slot_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Concurrency slots private to the test session (not shared with a live platform)."""
    return str(tmp_path_factory.mktemp("docker-slots"))


@pytest.fixture(scope="session")
def docker_api(require_docker: dict[str, Any]) -> Any:
    """A low-level Docker client for looking at what the backend left on the engine."""
    from sandbox.docker import DockerBackend

    return DockerBackend(**require_docker).api()


@pytest.fixture(scope="session")
def sandbox_gone(docker_api: Any) -> Callable[[str], bool]:
    """True when no container named ``handle`` and no new managed volume is left."""
    from sandbox.docker import MANAGED_FILTER

    def dangling_volumes() -> set[str]:
        found = docker_api.volumes(filters={"label": MANAGED_FILTER, "dangling": True})
        return {volume["Name"] for volume in (found.get("Volumes") or [])}

    before = dangling_volumes()

    def gone(handle: str) -> bool:
        named = docker_api.containers(all=True, filters={"name": f"^/{handle}$"})
        return not named and dangling_volumes() <= before

    return gone


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
