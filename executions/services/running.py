"""The run loop: claim a queued execution, run and judge it, end it once, with a heartbeat.

The execution's backend runs it as one session (``sandbox.contract.Session``): the runtime's
compile step first when it has one, then one case after another, each judged and stored as
it ends. A compile step that fails ends the execution with a compilation error, and no case
runs. A thread marks the execution alive meanwhile, so the reaper can tell a slow run from a
dead worker.

``_finish`` ends a run for the worker and the reaper: a conditional update from an active
status, so whoever races to end a run (a cancel makes the same kind of update), it ends once
and ``_execution_ended`` fires once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from executions import budget, judging, webhooks
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.models import (
    AuditEvent,
    Evaluation,
    Execution,
    Runtime,
    Status,
    TestCase,
    TestResult,
    Verdict,
)
from executions.outages import RateLimitedLog, close_broken_connections
from executions.services.dispatch import queue_attempt
from sandbox.contract import CompileStep, ErrorKind, RunResult, Session, compiled
from sandbox.policy import Limits, SandboxPolicy

logger = logging.getLogger(__name__)
T = TypeVar("T")

# What a compile step may print, per stream: a compiler's log, whatever output cap the
# submitter chose for the program. More is a compilation error (``compiled``).
COMPILE_OUTPUT_BYTES = 64 * 1024


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execution_claim(execution_id: int | None = None) -> Execution | None:
    """Move a queued execution to running for this worker: ``execution_id``, or else the
    oldest queued one. Returns None if there is none, or if another delivery of the task, a
    cancel or the reaper got to ``execution_id`` first.

    The execution comes back with its evaluation, runtime and test cases loaded: the run
    needs nothing else from the database."""
    # A run whose task was never sent (its backend could not start it, or the broker was
    # down) waits for the recovery lane to send it: other tasks leave it alone.
    queued = (
        Execution.objects.select_related("evaluation__runtime")
        .prefetch_related("evaluation__test_cases")
        .filter(status=Status.QUEUED, dispatched_at__isnull=False)
    )
    if execution_id is not None:
        execution = queued.filter(pk=execution_id).first()
        return execution if execution is not None and _claim(execution) else None
    for _ in range(CLAIM_ATTEMPTS):
        execution = queued.order_by("pk").first()
        if execution is None or _claim(execution):
            return execution
    return None  # other workers kept taking the oldest first; their tasks cover the rest


# How often a worker tries again when other workers claim the oldest queued run first.
CLAIM_ATTEMPTS = 5


def _claim(execution: Execution) -> bool:
    now = timezone.now()
    claim = {
        "status": Status.RUNNING,
        "started_at": now,
        "heartbeat_at": now,
        "deadline_at": budget.claim_deadline(execution, now=now),
        "worker": worker_identity(),
    }
    if not Execution.objects.filter(pk=execution.pk, status=Status.QUEUED).update(**claim):
        return False
    for name, value in claim.items():
        setattr(execution, name, value)
    return True


def execution_run(execution_id: int) -> None:
    """Run the oldest queued execution to a terminal state, if there is one.

    ``execution_id`` names the execution whose task this is; tasks are wake-ups
    (``services.dispatch``), so the run taken is the oldest queued, first in first out,
    whichever task was lost or sent twice."""
    execution = execution_claim()
    if execution is None:
        logger.info("The task of execution %s found nothing queued to run.", execution_id)
        return
    try:
        with _heartbeat(execution.pk):
            _run_claimed(execution)
    except Exception as exc:
        logger.exception("Execution %s failed inside the platform", execution.pk)
        _finish_error(
            execution, ErrorKind.BACKEND_ERROR, f"The platform failed while running this: {exc}"
        )


def _run_claimed(execution: Execution) -> None:
    evaluation = execution.evaluation
    try:
        backend = get_backend(execution.backend)
    except ImproperlyConfigured as exc:
        _fail_on_backend(execution, ErrorKind.BACKEND_ERROR, str(exc))
        return
    cases = list(evaluation.test_cases.all())
    policy = sandbox_policy(evaluation.runtime, evaluation)
    # Execution ids start again when a database is recreated, and several platforms may share
    # one engine or cluster: the nonce keeps a sandbox's name from colliding with one that
    # another platform, or a crashed run of a former database, left behind.
    session = Session(
        execution_id=execution.pk,
        handle=f"evalplatform-{execution.pk}-{secrets.token_hex(3)}",
        image=evaluation.runtime.image,
        command=list(evaluation.runtime.command),
        files={item["name"]: item["content"].encode() for item in evaluation.files},
        policy=policy,
        stdins=[case.stdin.encode() for case in cases] or [evaluation.stdin.encode()],
        labels={"evalplatform.evaluation": str(evaluation.pk)},
        compile=compile_step(evaluation.runtime, policy),
    )
    recorder = _Recorder(execution, cases, len(session.stdins))
    try:
        backend.run_session(session, recorder)
    except Exception as exc:
        # The contract says run_session() does not raise; a backend that does is contained.
        logger.exception("Backend %s raised while running %s", backend.name, session.handle)
        recorder.failure = recorder.failure or RunResult.failure(
            ErrorKind.BACKEND_ERROR, f"{type(exc).__name__}: {exc}", handle=session.handle
        )
    recorder.conclude()


class _Recorder:
    """Judges and stores each case of a session as it ends; the session's observer.

    ``stopped``: the execution ended elsewhere (cancel, reaper) before a step began.
    ``failure``: the result of a step that failed in the infrastructure, which ends the run.
    ``compile_failure``: the result of a compile step that ran and did not succeed.
    ``deciding``: the first run that was not accepted, else the first run, with its verdict.

    The execution ends (``conclude``) as soon as its last case is judged, while the backend
    still tears its sandbox down: the submitter need not wait for that.
    """

    def __init__(self, execution: Execution, cases: Sequence[TestCase], count: int) -> None:
        self.execution = execution
        self.cases = cases
        self.count = count
        self.concluded = False
        self.compile_ran = False
        self.judged = 0
        self.stopped = False
        self.failure: RunResult | None = None
        self.compile_failure: RunResult | None = None
        self.deciding: tuple[RunResult, Verdict] | None = None
        self.scored: list[judging.Scored] = []

    def case_starting(self, index: int, handle: str) -> bool:
        # A cancel reads this handle to stop the sandbox the case runs in.
        running = Execution.objects.filter(pk=self.execution.pk, status=Status.RUNNING)
        self.stopped = not _durably(
            lambda: running.update(backend_handle=handle), "note its sandbox", self.execution.pk
        )
        return not self.stopped

    def compile_ended(self, result: RunResult) -> bool:
        if result.error_kind is not None:
            self.failure = result
            return False
        # Stored as soon as it ends, whether it compiled or not: the compiler's warnings
        # are worth seeing too.
        self.compile_ran = True
        running = Execution.objects.filter(pk=self.execution.pk, status=Status.RUNNING)
        outcome = _compile_outcome(result)
        if not _durably(
            lambda: running.update(**outcome), "store its compile step", self.execution.pk
        ):
            self.stopped = True
            return False
        if not compiled(result):
            self.compile_failure = result
            return False
        return True

    def case_ended(self, index: int, result: RunResult) -> bool:
        if result.error_kind is not None:
            self.failure = result
            return False
        if not self.cases:
            verdict = judging.run_verdict(result)
        else:
            case = self.cases[index]
            verdict = judging.case_verdict(
                result,
                expected=case.expected_output,
                comparison=case.comparison,
                tolerance=case.tolerance,
            )
            _store_case(self.execution, case, verdict, result)
            self.scored.append(judging.Scored(verdict, case.weight))
        if self.deciding is None or self.deciding[1] == Verdict.ACCEPTED:
            self.deciding = (result, verdict)
        self.judged += 1
        if index == self.count - 1:
            self.conclude()
        return True

    def conclude(self) -> None:
        """End the execution once, from what the session told."""
        if self.concluded:
            return
        self.concluded = True
        execution, cases = self.execution, self.cases
        if self.stopped:
            return  # cancelled or reaped between runs; whoever ended it recorded why
        failure = self.failure
        if failure is not None and failure.error_kind == ErrorKind.CANCELLED:
            # A cancel or the reaper ends the run before it stops the sandbox, so the update
            # below finds nothing to end; a run still running had its sandbox stopped by
            # something else: the infrastructure, not the program, not a person.
            failure = replace(
                failure,
                error_kind=ErrorKind.BACKEND_ERROR,
                error_message="The sandbox was stopped or removed from outside the platform: "
                + failure.error_message,
            )
        if failure is not None and failure.error_kind == ErrorKind.REFUSED:
            _finish(
                execution, Status.REFUSED, _summary(failure, cases), error_kind=failure.error_kind
            )
            return
        if failure is not None and _never_started(failure, self):
            _release(execution, failure)
            return
        if failure is not None:
            _fail_on_backend(
                execution, failure.error_kind or "", failure.error_message, _summary(failure, cases)
            )
            return
        if self.compile_failure is not None:
            _finish(
                execution,
                Status.FINISHED,
                None,
                verdict=Verdict.COMPILATION_ERROR,
                score=Decimal(0) if cases else None,
            )
            return
        if self.deciding is None or self.judged < self.count:
            _fail_on_backend(
                execution,
                ErrorKind.BACKEND_ERROR,
                "The backend ended the session without reporting every case.",
            )
            return
        result, verdict = self.deciding
        scored = self.scored
        score = judging.overall(scored)[1] if scored else None
        overall_verdict = judging.overall(scored)[0] if scored else verdict
        _finish(
            execution,
            Status.FINISHED,
            _summary(result, cases),
            verdict=overall_verdict,
            score=score,
        )


def _summary(result: RunResult, cases: Sequence[TestCase]) -> RunResult:
    """What the execution row keeps of its deciding run. With test cases the output lives in
    each case's result, where a hidden case's is withheld from non-staff; copying it onto the
    execution would show it to them."""
    if not cases:
        return result
    return replace(result, stdout=b"", stderr=b"", stdout_truncated=False, stderr_truncated=False)


def _fail_on_backend(
    execution: Execution, kind: ErrorKind | str, message: str, result: RunResult | None = None
) -> None:
    """End a running execution in infrastructure error because its backend failed, and log it
    once, naming the execution, the backend and the reason; unless a cancel or the reaper
    ended it first, which then recorded why."""
    if _finish_error(execution, kind, message, result):
        logger.warning(
            "Execution %s failed on backend %s (%s): %s",
            execution.pk,
            execution.backend,
            kind,
            message,
            extra={"execution_id": execution.pk},
        )


def sandbox_policy(runtime: Runtime, evaluation: Evaluation) -> SandboxPolicy:
    return runtime_policy(
        runtime,
        time_limit_ms=evaluation.time_limit_ms,
        memory_mb=evaluation.memory_mb,
        output_kb=evaluation.output_kb,
    )


def runtime_policy(
    runtime: Runtime, *, time_limit_ms: int, memory_mb: int, output_kb: int
) -> SandboxPolicy:
    """The sandbox ``runtime``'s programs run in, with these per-case limits."""
    limits = Limits(
        wall_time_ms=time_limit_ms,
        memory_mb=memory_mb,
        output_bytes=output_kb * 1024,
        cpus=float(runtime.cpus),
        pids=runtime.pids_limit,
        open_files=runtime.open_files_limit,
        scratch_mb=runtime.scratch_mb,
    )
    return SandboxPolicy(limits=limits, network=runtime.network_enabled)


def compile_step(runtime: Runtime, policy: SandboxPolicy) -> CompileStep | None:
    """The runtime's compile step, or None when it has none: its command under its own wall
    time and memory, a compiler log's output cap, and the runtime's other limits."""
    if not runtime.compiles:
        return None
    limits = replace(
        policy.limits,
        wall_time_ms=runtime.compile_time_limit_ms,
        memory_mb=runtime.compile_memory_mb,
        output_bytes=COMPILE_OUTPUT_BYTES,
    )
    return CompileStep(command=list(runtime.compile_command), limits=limits)


def _compile_outcome(result: RunResult) -> dict[str, Any]:
    """The execution's compile fields from the result of a compile step that ran."""
    return {
        "compile_status": judging.compile_status(result),
        "compile_exit_code": result.exit_code,
        "compile_signal": result.signal,
        "compile_output": result.stdout + result.stderr,
        "compile_output_truncated": result.output_limit_exceeded,
        "compile_time_ms": result.wall_time_ms,
    }


def _outcome(result: RunResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "signal": result.signal,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "wall_time_ms": result.wall_time_ms,
        "peak_memory_kb": None
        if result.peak_memory_bytes is None
        else result.peak_memory_bytes // 1024,
    }


def _finish(
    execution: Execution,
    status: Status,
    result: RunResult | None,
    *,
    verdict: Verdict | str = "",
    score: Any = None,
    error_kind: str = "",
    error_message: str = "",
    from_status: Status = Status.RUNNING,
) -> bool:
    """End an execution that is still ``from_status``, once. Returns False if something else
    ended it first."""
    outcome = _outcome(result) if result is not None else {}
    if result is not None and not error_message:
        error_message = result.error_message
    ending = Execution.objects.filter(pk=execution.pk, status=from_status)
    fields = {
        "status": status,
        "verdict": verdict,
        "score": score,
        "finished_at": timezone.now(),
        "error_kind": error_kind,
        "error_message": error_message,
        **outcome,
    }
    if not _durably(lambda: ending.update(**fields), "store its result", execution.pk):
        logger.info("Execution %s had already ended; its late result is discarded.", execution.pk)
        return False
    _execution_ended(execution.pk)
    if status == Status.ERROR and error_kind in RETRIED_KINDS:
        _retry(execution, error_kind)
    return True


def _finish_error(
    execution: Execution,
    kind: ErrorKind | str,
    message: str,
    result: RunResult | None = None,
    *,
    from_status: Status = Status.RUNNING,
) -> bool:
    return _finish(
        execution,
        Status.ERROR,
        result,
        verdict=Verdict.INTERNAL_ERROR,
        error_kind=kind,
        error_message=message,
        from_status=from_status,
    )


@contextlib.contextmanager
def _heartbeat(execution_id: int) -> Iterator[None]:
    """Mark the execution alive every few seconds from a thread, so the reaper can tell a
    slow run from a dead worker."""
    stop = threading.Event()
    interval = execution_settings.HEARTBEAT_INTERVAL_S

    def beat() -> None:
        # It beats until the run ends, whatever the database does meanwhile: a beat that
        # fails is retried at the next one, on a fresh connection.
        try:
            while not stop.wait(interval):
                try:
                    Execution.objects.filter(pk=execution_id, status=Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:
                    close_broken_connections()
                    _database_down.warning(
                        "Heartbeat of execution %s missed (%s); trying again in %s s.",
                        execution_id,
                        exc,
                        interval,
                    )
        finally:
            connection.close()  # this thread's own, whatever state it is in

    thread = threading.Thread(target=beat, name=f"heartbeat-{execution_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# The database errors a restart, a failover or a lock wait cause: worth waiting out.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)
_database_down = RateLimitedLog(logger, every_s=10)


def _durably(write: Callable[[], T], what: str, execution_id: int) -> T:
    """``write()``, tried again on a fresh connection with back-off while the database is
    unreachable, for up to ``WRITE_RETRY_S``: a database restart must not lose what a
    finished program produced. The heartbeat keeps beating meanwhile."""
    deadline = time.monotonic() + execution_settings.WRITE_RETRY_S
    delay = 0.25
    while True:
        try:
            return write()
        except TRANSIENT_DATABASE_ERRORS as exc:
            close_broken_connections()
            if time.monotonic() + delay > deadline:
                raise
            _database_down.warning(
                "Execution %s: could not %s (%s); trying again until the database answers.",
                execution_id,
                what,
                exc,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _store_case(execution: Execution, case: TestCase, verdict: Verdict, result: RunResult) -> None:
    attempts = 0

    def store() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            TestResult.objects.create(
                execution=execution, test_case=case, verdict=verdict, **_outcome(result)
            )
            return
        # A write that failed in flight may have landed: once stored is enough.
        with contextlib.suppress(IntegrityError), transaction.atomic():
            TestResult.objects.create(
                execution=execution, test_case=case, verdict=verdict, **_outcome(result)
            )

    _durably(store, f"store the result of test case {case.position}", execution.pk)


# A run that ended in one of these never got a fair try: the platform runs it again.
RETRIED_KINDS = frozenset({ErrorKind.WORKER_LOST, ErrorKind.BACKEND_ERROR, ErrorKind.UNAVAILABLE})
# How often a run may go back to the queue because its backend could not start it.
MAX_RELEASES = 10


def _never_started(failure: RunResult, recorder: _Recorder) -> bool:
    """The backend could not be reached before anything of the run happened."""
    return (
        failure.error_kind == ErrorKind.UNAVAILABLE
        and not recorder.judged
        and not recorder.compile_ran
        and recorder.execution.requeue_count < MAX_RELEASES
    )


def _release(execution: Execution, failure: RunResult) -> None:
    """Put a run its backend could not start back in the queue, unsent: the recovery lane
    sends it again once the backend answers (a Docker engine restarting, say)."""
    running = Execution.objects.filter(pk=execution.pk, status=Status.RUNNING)
    released = _durably(
        lambda: running.update(
            status=Status.QUEUED,
            started_at=None,
            deadline_at=None,
            heartbeat_at=timezone.now(),
            worker="",
            backend_handle="",
            dispatched_at=None,
            requeue_count=F("requeue_count") + 1,
        ),
        "return it to the queue",
        execution.pk,
    )
    if not released:
        return
    AuditEvent.objects.create(
        action=AuditEvent.Action.RELEASE,
        evaluation_id=execution.evaluation_id,
        execution=execution,
        detail={"reason": failure.error_message[:500]},
    )
    logger.warning(
        "Execution %s returned to the queue: backend %s could not start it (%s). It runs once "
        "the backend answers again.",
        execution.pk,
        execution.backend,
        failure.error_message,
        extra={"execution_id": execution.pk},
    )


def _retry(execution: Execution, kind: str) -> None:
    """Queue the next attempt of a run the infrastructure interrupted (at most
    ``AUTO_RERUNS`` in a row): the submitter did nothing wrong. Never raises."""
    if execution.retry_count >= execution_settings.AUTO_RERUNS:
        return
    try:
        with transaction.atomic():
            evaluation = Evaluation.objects.select_for_update().get(pk=execution.evaluation_id)
            retry = queue_attempt(
                evaluation, user=None, backend=execution.backend, retry_of=execution
            )
            AuditEvent.objects.create(
                action=AuditEvent.Action.RETRY,
                evaluation=evaluation,
                execution=retry,
                detail={"after": execution.pk, "reason": kind},
            )
    except Exception:
        logger.exception("Could not re-run execution %s after %s", execution.pk, kind)
        return
    logger.warning(
        "Execution %s ended in %s; re-running it as execution %s (automatic re-run %s of %s).",
        execution.pk,
        kind,
        retry.pk,
        retry.retry_count,
        execution_settings.AUTO_RERUNS,
        extra={"execution_id": execution.pk},
    )


def _execution_ended(execution_id: int) -> None:
    """Called once per execution, right after the conditional update that ended it (any
    terminal state, whoever ended it). Queues the webhook, if the evaluation has one, after
    the surrounding transaction commits, so a slow receiver never holds up a worker."""
    transaction.on_commit(functools.partial(webhooks.execution_ended, execution_id))


def _cancel_sandbox(backend: str, handle: str) -> None:
    try:
        get_backend(backend).cancel(handle)
    except Exception:
        # The sandbox dies at its own deadline anyway; a failed kill must not fail the request.
        logger.exception("Could not cancel sandbox %s on backend %s", handle, backend)
