"""A deterministic backend for tests, like Django's locmem mail backend.

It never executes code. By default it echoes stdin to stdout and exits 0. A source file may
steer it with a directive line, so that a test in another process can ask for an outcome::

    # fake: {"stdout": "hi\\n", "exit_code": 3, "delay": 2.5}

Keys: ``stdout`` (repeated ``repeat`` times), ``stderr``, ``exit_code``, ``signal``,
``timed_out``, ``oom_killed``, ``delay`` (seconds, interruptible by ``cancel``),
``error_kind``, ``error_message``.

A session with a compile step (``Session.compile``) compiles first, then runs its cases as
the default ``run_session`` does. The compile step succeeds with no output unless the same
keys prefixed with ``compile_`` say otherwise (``compile_exit_code``, ``compile_stdout``,
``compile_stderr``, ``compile_timed_out``, ``compile_error_kind``, ...); its output is capped
at the compile step's own output limit. Each compile step is kept in ``compiles``.
When ``EXECUTIONS["FAKE_RUN_LOG"]`` names a file, every run of a case appends its handle to it
so tests can count runs across processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from executions.conf import execution_settings
from sandbox.contract import (
    CompileStep,
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
    compiled,
)

DIRECTIVE = b"# fake:"
COMPILE_PREFIX = "compile_"


class FakeBackend(ExecutionBackend):
    name = "fake"

    # Every request and compile step this process ran, for in-process assertions.
    runs: ClassVar[list[RunRequest]] = []
    compiles: ClassVar[list[CompileStep]] = []
    _cancelled: ClassVar[dict[str, threading.Event]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def _run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.runs.append(request)
        self._log(request.handle)
        spec = self._directive(request.files)
        return self._outcome(spec, request.handle, request.limits.output_bytes, request.stdin)

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        """The default session, after a compile step when the session has one. Like a
        backend with one sandbox per session, it announces case 0 before compiling, under
        the handle that cancels the compile step too."""
        step = session.compile
        if step is None:
            super().run_session(session, observer)
            return
        handle = session.case_handle(0)
        if not observer.case_starting(0, handle):
            return
        problem = session.problem()
        directive: dict[str, Any] = {}
        if not problem:
            try:
                directive = self._directive(session.files)
            except ValueError as exc:  # as run() does: a failure, never an exception
                problem = f"Fake backend error: {exc}"
        if problem:
            failure = RunResult.failure(ErrorKind.BACKEND_ERROR, problem, handle=handle)
            observer.compile_ended(failure)
            return
        with self._lock:
            self.compiles.append(step)
        spec = {
            key.removeprefix(COMPILE_PREFIX): value
            for key, value in directive.items()
            if key.startswith(COMPILE_PREFIX)
        }
        result = self._outcome(spec, handle, step.limits.output_bytes, b"")
        if not (observer.compile_ended(result) and compiled(result)):
            return
        for index in range(len(session.stdins)):
            if index and not observer.case_starting(index, session.case_handle(index)):
                return
            if not observer.case_ended(index, self.run(session.case_request(index))):
                return

    def _outcome(self, spec: dict[str, Any], handle: str, cap: int, stdin: bytes) -> RunResult:
        """What the directive ``spec`` asks a run under ``handle`` to produce; with no
        ``stdout`` key, the output is ``stdin``."""
        with self._lock:
            cancelled = self._cancelled.setdefault(handle, threading.Event())
        started = time.monotonic()
        delay = float(spec.get("delay", 0))
        if delay and cancelled.wait(delay):
            return RunResult.failure(ErrorKind.CANCELLED, "Cancelled.", handle=handle)
        if "error_kind" in spec:
            return RunResult.failure(
                ErrorKind(spec["error_kind"]), spec.get("error_message", ""), handle=handle
            )
        stdout = spec["stdout"].encode() * int(spec.get("repeat", 1)) if "stdout" in spec else stdin
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
            handle=handle,
        )

    def cancel(self, handle: str) -> None:
        with self._lock:
            self._cancelled.setdefault(handle, threading.Event()).set()

    def health(self) -> Health:
        return Health(ok=True, detail="Fake backend: nothing is executed.", version="fake")

    def describe(self) -> Isolation:
        return Isolation(facts={"runs": "nothing: a stand-in for tests that pretends to"})

    @staticmethod
    def _directive(files: Mapping[str, bytes]) -> dict[str, Any]:
        for content in files.values():
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
            cls.compiles.clear()
            cls._cancelled.clear()
