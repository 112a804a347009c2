"""Starting real execution services (``python -m execution_service``) for tests."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import signing
from tests.sandbox.attacks import CANARY_ENV, CANARY_VALUE

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    """One execution service subprocess on a loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    secret: str
    log: Path
    args: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> requests.Response:
        headers = signing.sign(self.secret, method, path, body)
        return requests.request(
            method, self.url + path, data=body, headers=headers, timeout=10, **kwargs
        )

    def health(self) -> dict[str, Any]:
        response = self.call("GET", "/v1/health")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    directory: Path, docker_options: dict[str, Any], *args: str, secret: str | None = None
) -> Service:
    """Start the service without Django settings in its environment; wait until it listens."""
    secret = secret or secrets.token_urlsafe(40)
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DJANGO_SETTINGS_MODULE" and not key.startswith("EXECUTION_SERVICE_")
    }
    # A platform secret in the service's environment must not reach a sandbox either.
    env.update({"EXECUTION_SERVICE_SECRET": secret, CANARY_ENV: CANARY_VALUE})
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "service.log"
    argv = [
        sys.executable,
        "-m",
        "execution_service",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--docker-url",
        docker_options["base_url"],
        "--lock-dir",
        str(directory / "slots"),
        *args,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("listening on "):
                url = "http://" + line.removeprefix("listening on ").strip()
                return Service(process, url, secret, log, list(args))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail(f"the execution service did not start: {log.read_text()[-3000:]}")


@pytest.fixture
def service_factory(require_docker: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def factory(*args: str, secret: str | None = None) -> Service:
        service = start_service(
            tmp_path / f"service{len(started)}", require_docker, *args, secret=secret
        )
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()
