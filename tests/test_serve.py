"""``manage.py serve`` (what ``make run`` starts) says once which backend runs code, why, and
the next step when it is off; then serves, with the task cluster, until it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_docs import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_serve_announces_the_backend_once_with_the_next_step(tmp_path: Path) -> None:
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "EXECUTION_BACKEND", "SECRET_KEY"}
    }
    # A pod's environment: container evidence whatever this machine is, and a next step
    # (Kubernetes Jobs) that needs no probe of anything outside.
    environ.update(DEBUG="1", VAR_DIR=str(tmp_path), KUBERNETES_SERVICE_HOST="10.0.0.1")
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--noinput"], cwd=ROOT, env=environ, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [*manage, "serve", "--port", str(port)],
            cwd=ROOT, env=environ, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        # The cluster logs its start after the web server may already answer.
        while "running." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    output = log.read_text()
    assert output.count("Execution backend:") == 1, output
    assert "Execution backend: disabled. The platform runs inside a container" in output
    assert "Next step: This platform runs in a Kubernetes pod" in output
    assert "  kubectl apply -k deploy/kubernetes" in output
    assert server.returncode == 0, output
