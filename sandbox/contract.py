"""The execution backend contract: what every backend takes, returns and promises."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.policy import Limits, SandboxPolicy

# Highest signal number Linux delivers; exit codes 129..128+MAX_SIGNAL mean "killed by N".
MAX_SIGNAL = 64


class ErrorKind(enum.StrEnum):
    """Why a run produced no trustworthy result. Each is an infrastructure failure."""

    REFUSED = "refused"  # the backend will not run code here, by design
    UNAVAILABLE = "unavailable"  # the engine, cluster or service could not be reached
    BACKEND_ERROR = "backend_error"  # the backend failed while running (image missing, API error)
    CANCELLED = "cancelled"  # stopped on request
    WORKER_LOST = "worker_lost"  # the worker stopped before reporting (set by the reaper)


@dataclass(frozen=True)
class RunRequest:
    """One sandbox run: a program, its input and its limits.

    ``image`` and ``command`` come from the admin's runtime catalogue, never from the
    submitter. ``files`` maps plain file names to their bytes. ``handle`` names the sandbox
    so that another process can cancel it before the run returns.
    """

    execution_id: int
    handle: str
    image: str
    command: Sequence[str]
    files: Mapping[str, bytes]
    stdin: bytes
    policy: SandboxPolicy
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def limits(self) -> Limits:
        return self.policy.limits


@dataclass
class RunResult:
    """What came out of one sandbox run. Output is capped; the flags say where."""

    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    wall_time_ms: int | None = None
    peak_memory_bytes: int | None = None
    handle: str = ""
    error_kind: ErrorKind | None = None
    error_message: str = ""

    def record_exit(self, code: int) -> None:
        """Set the exit code; a code of ``128 + N`` (a shell or init reporting a child killed
        by signal N) also sets ``signal``."""
        self.exit_code = code
        if 128 < code <= 128 + MAX_SIGNAL:
            self.signal = code - 128

    @property
    def output_limit_exceeded(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    @classmethod
    def failure(cls, kind: ErrorKind, message: str, *, handle: str = "") -> RunResult:
        return cls(error_kind=kind, error_message=message, handle=handle)


@dataclass(frozen=True)
class Health:
    """A backend's answer to "can you run code now?"."""

    ok: bool
    detail: str
    version: str = ""
    capacity: int | None = None
    in_use: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Isolation:
    """The isolation facts of a backend, shown on the security page."""

    summary: str
    trusts: str
    escape_impact: str
    features: Sequence[str] = ()
    choose_when: str = ""


class ExecutionBackend:
    """Base class for execution backends.

    Subclasses implement ``run``; ``cancel``, ``health`` and ``describe`` have safe
    defaults. ``run`` blocks for at most the request's wall time plus a grace, never raises
    for a failure of the infrastructure (it returns a result with ``error_kind`` set), and
    removes every resource it created on every path.
    """

    name = "base"
    # Seconds a run may need beyond its wall time before its program starts (scheduling a pod,
    # pulling an image). The reaper and the task timeout allow for it.
    start_allowance_s: float = 0.0

    def __init__(self, **options: Any) -> None:
        self.options = options

    def run(self, request: RunRequest) -> RunResult:
        raise NotImplementedError

    def cancel(self, handle: str) -> None:
        """Stop the sandbox named ``handle``, from any process. Unknown handles are ignored."""

    def health(self) -> Health:
        return Health(ok=True, detail="No health check for this backend.")

    def remove_orphans(self, older_than_s: float) -> int:
        """Remove sandboxes this backend started over ``older_than_s`` ago and still holds
        (left by a worker that died). Returns how many were removed."""
        return 0

    def describe(self) -> Isolation:
        raise NotImplementedError
