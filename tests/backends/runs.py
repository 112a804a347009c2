"""A run request for backend tests that need no runtime: one small file, one limit set."""

from __future__ import annotations

from sandbox.contract import RunRequest
from sandbox.policy import Limits, SandboxPolicy


def request(files: dict[str, bytes] | None = None, stdin: bytes = b"in") -> RunRequest:
    return RunRequest(
        execution_id=1,
        handle="evalplatform-1-0",
        image="img",
        command=["python3", "main.py"],
        files=files or {"main.py": b"print(1)"},
        stdin=stdin,
        policy=SandboxPolicy(limits=Limits(wall_time_ms=1000, memory_mb=64, output_bytes=10)),
    )
