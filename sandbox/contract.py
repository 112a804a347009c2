"""The execution backend contract: what every backend takes, returns and promises."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from sandbox.files import safe_relative
from sandbox.options import build_options
from sandbox.policy import Limits, SandboxPolicy

# Highest signal number Linux delivers; exit codes 129..128+MAX_SIGNAL mean "killed by N".
MAX_SIGNAL = 64


class ErrorKind(enum.StrEnum):
    """Why a run produced no trustworthy result. Each is an infrastructure failure."""

    REFUSED = "refused"  # the backend will not run code here, by design
    # The engine, cluster or service could not be reached before the session started there:
    # nothing of it ran, so the platform puts it back in the queue until the backend answers.
    UNAVAILABLE = "unavailable"
    # The backend failed (image missing, API error), or lost a session that had started
    # (the engine or service went away mid-run, the sandbox was killed from outside).
    BACKEND_ERROR = "backend_error"
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

    def problem(self) -> str:
        """Why no backend can run this request, or ``""``: a runtime without a command, or a
        file name that would leave the code directory (``sandbox.files.safe_relative``)."""
        if not self.command:
            return "The runtime has no command."
        for name in self.files:
            try:
                safe_relative(name)
            except ValueError as exc:
                return str(exc)
        return ""


@dataclass(frozen=True)
class CompileStep:
    """A command run once, before every case, in a writable copy of the code; what it leaves
    there becomes the read-only code directory of every case."""

    command: Sequence[str]
    limits: Limits


@dataclass(frozen=True)
class Session:
    """Every run of one execution: one program and its files, an optional compile step, and
    the stdin of each case.

    ``handle`` names the session, so another process can cancel it. A backend that keeps one
    sandbox for the whole session (one container, one Job) runs each case as a fresh process
    in it, under ``policy.limits``; the default (``ExecutionBackend.run_session``) runs each
    case as a run of its own, named ``case_handle(index)``, and cannot compile.
    """

    execution_id: int
    handle: str
    image: str
    command: Sequence[str]
    files: Mapping[str, bytes]
    policy: SandboxPolicy
    stdins: Sequence[bytes]
    labels: Mapping[str, str] = field(default_factory=dict)
    compile: CompileStep | None = None

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    def problem(self) -> str:
        """Why no backend can run this session, or ``""`` (see ``RunRequest.problem``)."""
        if not self.stdins:
            return "The session has no case to run."
        if self.compile is not None and not self.compile.command:
            return "The runtime's compile step has no command."
        return self.case_request(0).problem()

    @classmethod
    def of_request(cls, request: RunRequest) -> Session:
        """``request`` as a session of one case, under the same handle."""
        return cls(
            execution_id=request.execution_id,
            handle=request.handle,
            image=request.image,
            command=request.command,
            files=request.files,
            policy=request.policy,
            stdins=[request.stdin],
            labels=request.labels,
        )

    def case_handle(self, index: int) -> str:
        return f"{self.handle}-{index}"

    def case_request(self, index: int) -> RunRequest:
        """Case ``index`` as a run of its own."""
        return RunRequest(
            execution_id=self.execution_id,
            handle=self.case_handle(index),
            image=self.image,
            command=self.command,
            files=self.files,
            stdin=self.stdins[index],
            policy=self.policy,
            labels=self.labels,
        )


class SessionObserver(Protocol):
    """Told as a session's compile step ends and as each case starts and ends; any answer
    False stops the session there (the execution was cancelled, or a step failed for a reason
    that ends it). ``case_starting(0)`` comes first, before any sandbox exists, so the handle
    that cancels the session is known before anything runs; a failure of the infrastructure
    is the result of the step it happened in."""

    def case_starting(self, index: int, handle: str) -> bool: ...

    def compile_ended(self, result: RunResult) -> bool: ...

    def case_ended(self, index: int, result: RunResult) -> bool: ...


def compiled(result: RunResult) -> bool:
    """Did a compile step succeed: exit status 0 within every limit?"""
    return (
        result.error_kind is None
        and result.exit_code == 0
        and not (result.timed_out or result.oom_killed or result.output_limit_exceeded)
    )


class _OneCase:
    """Collects the result of a one-case session (``ExecutionBackend.run_one_case``)."""

    def __init__(self, handle: str) -> None:
        self.result = RunResult.failure(
            ErrorKind.BACKEND_ERROR, "The backend ended the run without a result.", handle=handle
        )

    def case_starting(self, index: int, handle: str) -> bool:
        return True

    def compile_ended(self, result: RunResult) -> bool:
        return True

    def case_ended(self, index: int, result: RunResult) -> bool:
        self.result = result
        return True


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
    cpu_time_ms: int | None = None
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
    """Where this backend's sandboxes run, as configured now: live facts, in order.

    No prose: what each kind of backend trusts, and what an escape gets, is written once, on
    the security page (``executions.security.BACKEND_PROFILES``).
    """

    facts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that takes none."""


class ExecutionBackend:
    """Base class for execution backends.

    ``run`` is a template: it checks the request (``RunRequest.problem``), calls the backend's
    own ``_run``, turns any exception ``_run`` raises into a ``BACKEND_ERROR`` result (logged
    once, with the execution id), and marks a program that ended by itself but ran longer
    than its wall time as timed out. Subclasses implement ``_run``; ``cancel``, ``health``
    and ``describe`` have safe defaults. ``run`` blocks for at most the request's wall time
    plus a grace, never raises for a failure of the infrastructure (it returns a result with
    ``error_kind`` set), and removes every resource it created on every path.

    A backend's options are the frozen dataclass ``options_class``, built from the keyword
    options given to the constructor (``sandbox.options.build_options``, which raises
    ``OptionError`` naming an unknown or bad option) and kept as ``options``.
    """

    name = "base"
    options_class: ClassVar[type] = NoOptions
    options: Any
    # Seconds a run may need beyond its wall time before its program starts (scheduling a pod,
    # pulling an image), and may wait for a free sandbox before that. The time budget
    # (sandbox.budget) allows for both.
    start_allowance_s: float = 0.0
    slot_wait_s: float = 0.0

    def __init__(self, **options: Any) -> None:
        self.options = build_options(self.options_class, options)

    def run(self, request: RunRequest) -> RunResult:
        problem = request.problem()
        if problem:
            return RunResult.failure(ErrorKind.BACKEND_ERROR, problem, handle=request.handle)
        try:
            result = self._run(request)
        except Exception as exc:  # run() must not raise for infrastructure failures
            logging.getLogger(type(self).__module__).exception(
                "%s backend failed on execution %s", self.name, request.execution_id
            )
            return RunResult.failure(
                ErrorKind.BACKEND_ERROR,
                f"{self.name.capitalize()} backend error: {type(exc).__name__}: {exc}",
                handle=request.handle,
            )
        ended_by_itself = result.exit_code is not None or result.signal is not None
        if (
            result.error_kind is None
            and ended_by_itself
            and result.wall_time_ms is not None
            and result.wall_time_ms > request.limits.wall_time_ms
        ):
            result.timed_out = True
        return result

    def _run(self, request: RunRequest) -> RunResult:
        """Run a request that passed ``RunRequest.problem``; may raise (``run`` catches)."""
        raise NotImplementedError

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        """Run the cases of ``session`` in order, telling ``observer`` as each starts (with the
        handle that cancels it) and ends; stop as soon as it answers False.

        The default runs each case through ``run`` in a sandbox of its own. Like ``run`` it
        does not raise for a failure of the infrastructure: that is a case's result.
        """
        if session.compile is not None:
            if observer.case_starting(0, session.case_handle(0)):
                observer.case_ended(
                    0,
                    RunResult.failure(
                        ErrorKind.BACKEND_ERROR,
                        f"The {self.name} backend cannot run a compile step.",
                        handle=session.case_handle(0),
                    ),
                )
            return
        for index in range(len(session.stdins)):
            if not observer.case_starting(index, session.case_handle(index)):
                return
            if not observer.case_ended(index, self.run(session.case_request(index))):
                return

    def run_one_case(self, request: RunRequest) -> RunResult:
        """``request`` as a session of one case: ``_run`` for a backend whose every run is a
        session (``run`` has already checked the request)."""
        collector = _OneCase(request.handle)
        self.run_session(Session.of_request(request), collector)
        return collector.result

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
