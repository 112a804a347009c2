"""Helpers of the Kubernetes backend's tests: a request, a backend, and play() on the emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from executions.backends.kubernetes import KubernetesBackend
from sandbox.contract import RunRequest, RunResult
from sandbox.policy import Limits, SandboxPolicy

from .kube_emulator import CONFIGMAPS, JOBS, Emulator, KubeletPlayer

NS = "evalplatform-sandbox"


def make_backend(api_client: Any, **options: Any) -> KubernetesBackend:
    defaults: dict[str, Any] = {
        "namespace": NS,
        "pending_timeout_s": 5,
        "grace_s": 2,
        "watch_timeout_s": 2,
    }
    return KubernetesBackend(api_client=api_client, **{**defaults, **options})


def make_request(
    handle: str = "evalplatform-41-0",
    *,
    stdin: bytes = b"input\x00\xff",
    files: dict[str, bytes] | None = None,
    **limits: Any,
) -> RunRequest:
    return RunRequest(
        execution_id=41,
        handle=handle,
        image="evalplatform/python:3.11",
        command=("python3", "main.py"),
        files=files or {"main.py": b"print('hello')\n", "pkg/util.py": b"\x00\x01binary"},
        stdin=stdin,
        policy=SandboxPolicy(
            limits=Limits(
                **{"wall_time_ms": 5000, "memory_mb": 128, "output_bytes": 1000, **limits}
            )
        ),
        labels={"evalplatform.evaluation": "7"},
    )


Scenario = Callable[[KubeletPlayer], None]


def log_reads(emulator: Emulator) -> list[Any]:
    return [
        req
        for req in emulator.on_loop(lambda: list(emulator.kmock))
        if str(req.url.path).endswith("/log")
    ]


def wait_for_log_reads(emulator: Emulator, count: int = 2) -> None:
    deadline = time.monotonic() + 10
    while len(log_reads(emulator)) < count:
        assert time.monotonic() < deadline, "the backend never read the logs"
        time.sleep(0.02)
    time.sleep(0.2)  # and took in what they held


def play(
    emulator: Emulator,
    api_client: Any,
    backend: KubernetesBackend,
    request: RunRequest,
    scenario: Scenario,
) -> RunResult:
    """Run ``request`` in a thread while ``scenario`` plays the cluster's side of it."""
    box: dict[str, RunResult] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", backend.run(request)))
    worker.start()
    job = emulator.wait_for(JOBS, NS, request.handle)
    scenario(KubeletPlayer(api_client, NS, job))
    worker.join(timeout=60)
    assert not worker.is_alive(), "run() did not return"
    return box["r"]


def assert_cleaned_up(emulator: Emulator, handle: str) -> None:
    assert emulator.get(JOBS, NS, handle) is None, "the Job was left behind"
    assert emulator.get(CONFIGMAPS, NS, handle) is None, "the ConfigMap was left behind"


def finish(exit_code: int, reason: str = "") -> Scenario:
    def scenario(player: KubeletPlayer) -> None:
        player.create_pod()
        player.scheduled()
        player.running()
        player.terminated(exit_code, reason)
        if exit_code == 0:
            player.job_complete()
        else:
            player.job_failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")

    return scenario
