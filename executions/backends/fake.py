"""A deterministic backend for tests, like Django's locmem mail backend.

It never executes code. By default it echoes stdin to stdout and exits 0. A source file may
steer it with a directive line, so that a test in another process can ask for an outcome::

    # fake: {"stdout": "hi\\n", "exit_code": 3, "delay": 2.5}

Keys: ``stdout`` (repeated ``repeat`` times), ``stderr``, ``exit_code``, ``signal``,
``timed_out``, ``oom_killed``, ``delay`` (seconds, interruptible by ``cancel``),
``error_kind``, ``error_message``.
When ``EXECUTIONS["FAKE_RUN_LOG"]`` names a file, every run appends its handle to it so tests
can count runs across processes.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, ClassVar

from executions.conf import execution_settings
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)

DIRECTIVE = b"# fake:"


class FakeBackend(ExecutionBackend):
    name = "fake"

    # Every request this process ran, for in-process assertions.
    runs: ClassVar[list[RunRequest]] = []
    _cancelled: ClassVar[dict[str, threading.Event]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def _run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.runs.append(request)
            cancelled = self._cancelled.setdefault(request.handle, threading.Event())
        self._log(request.handle)
        spec = self._directive(request)
        started = time.monotonic()
        delay = float(spec.get("delay", 0))
        if delay and cancelled.wait(delay):
            return RunResult.failure(ErrorKind.CANCELLED, "Cancelled.", handle=request.handle)
        if "error_kind" in spec:
            return RunResult.failure(
                ErrorKind(spec["error_kind"]), spec.get("error_message", ""), handle=request.handle
            )
        cap = request.limits.output_bytes
        stdout = (
            spec["stdout"].encode() * int(spec.get("repeat", 1))
            if "stdout" in spec
            else request.stdin
        )
        stderr = spec.get("stderr", "").encode()
        return RunResult(
            exit_code=spec.get("exit_code", 0 if "signal" not in spec else None),
            signal=spec.get("signal"),
            stdout=stdout[:cap],
            stderr=stderr[:cap],
            stdout_truncated=len(stdout) > cap,
            stderr_truncated=len(stderr) > cap,
            timed_out=bool(spec.get("timed_out", False)),
            oom_killed=bool(spec.get("oom_killed", False)),
            wall_time_ms=int((time.monotonic() - started) * 1000),
            peak_memory_bytes=1024 * 1024,
            handle=request.handle,
        )

    def cancel(self, handle: str) -> None:
        with self._lock:
            self._cancelled.setdefault(handle, threading.Event()).set()

    def health(self) -> Health:
        return Health(ok=True, detail="Fake backend: nothing is executed.", version="fake")

    def describe(self) -> Isolation:
        return Isolation(facts={"runs": "nothing: a stand-in for tests that pretends to"})

    @staticmethod
    def _directive(request: RunRequest) -> dict[str, Any]:
        for content in request.files.values():
            for line in content.splitlines():
                if line.startswith(DIRECTIVE):
                    spec = json.loads(line[len(DIRECTIVE) :])
                    if not isinstance(spec, dict):
                        raise ValueError("A fake directive must be a JSON object.")
                    return spec
        return {}

    @staticmethod
    def _log(handle: str) -> None:
        path = execution_settings.FAKE_RUN_LOG
        if path:
            with open(path, "a") as log:
                log.write(handle + "\n")

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.runs.clear()
            cls._cancelled.clear()
