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
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from executions import budget, judging, webhooks
from executions.backends import get_backend
from executions.conf import execution_settings
from executions.models import (
    Evaluation,
    Execution,
    Runtime,
    Status,
    TestCase,
    TestResult,
    Verdict,
)
from sandbox.contract import CompileStep, ErrorKind, RunResult, Session, compiled
from sandbox.policy import Limits, SandboxPolicy

logger = logging.getLogger(__name__)

# What a compile step may print, per stream: a compiler's log, whatever output cap the
# submitter chose for the program. More is a compilation error (``compiled``).
COMPILE_OUTPUT_BYTES = 64 * 1024


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execution_claim(execution_id: int) -> Execution | None:
    """Move a queued execution to running for this worker, or return None if another
    delivery of the task, a cancel or the reaper got there first.

    The execution comes back with its evaluation, runtime and test cases loaded: the run
    needs nothing else from the database."""
    execution = (
        Execution.objects.select_related("evaluation__runtime")
        .prefetch_related("evaluation__test_cases")
        .filter(pk=execution_id)
        .first()
    )
    if execution is None or execution.status != Status.QUEUED:
        return None
    now = timezone.now()
    claim = {
        "status": Status.RUNNING,
        "started_at": now,
        "heartbeat_at": now,
        "deadline_at": budget.claim_deadline(execution, now=now),
        "worker": worker_identity(),
    }
    if not Execution.objects.filter(pk=execution_id, status=Status.QUEUED).update(**claim):
        return None
    for name, value in claim.items():
        setattr(execution, name, value)
    return execution


def execution_run(execution_id: int) -> None:
    """Claim an execution and run it to a terminal state. Safe to call twice."""
    execution = execution_claim(execution_id)
    if execution is None:
        logger.info("Execution %s was already claimed or ended; skipping.", execution_id)
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
        self.judged = 0
        self.stopped = False
        self.failure: RunResult | None = None
        self.compile_failure: RunResult | None = None
        self.deciding: tuple[RunResult, Verdict] | None = None
        self.scored: list[judging.Scored] = []

    def case_starting(self, index: int, handle: str) -> bool:
        # A cancel reads this handle to stop the sandbox the case runs in.
        running = Execution.objects.filter(pk=self.execution.pk, status=Status.RUNNING)
        self.stopped = not running.update(backend_handle=handle)
        return not self.stopped

    def compile_ended(self, result: RunResult) -> bool:
        if result.error_kind is not None:
            self.failure = result
            return False
        # Stored as soon as it ends, whether it compiled or not: the compiler's warnings
        # are worth seeing too.
        running = Execution.objects.filter(pk=self.execution.pk, status=Status.RUNNING)
        if not running.update(**_compile_outcome(result)):
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
            TestResult.objects.create(
                execution=self.execution, test_case=case, verdict=verdict, **_outcome(result)
            )
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
        if failure is not None and failure.error_kind == ErrorKind.REFUSED:
            _finish(
                execution, Status.REFUSED, _summary(failure, cases), error_kind=failure.error_kind
            )
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
        )


def sandbox_policy(runtime: Runtime, evaluation: Evaluation) -> SandboxPolicy:
    limits = Limits(
        wall_time_ms=evaluation.time_limit_ms,
        memory_mb=evaluation.memory_mb,
        output_bytes=evaluation.output_kb * 1024,
        cpus=float(runtime.cpus),
        pids=runtime.pids_limit,
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
    ended = Execution.objects.filter(pk=execution.pk, status=from_status).update(
        status=status,
        verdict=verdict,
        score=score,
        finished_at=timezone.now(),
        error_kind=error_kind,
        error_message=error_message,
        **outcome,
    )
    if not ended:
        logger.info("Execution %s had already ended; its late result is discarded.", execution.pk)
        return False
    _execution_ended(execution.pk)
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
        try:
            while not stop.wait(interval):
                Execution.objects.filter(pk=execution_id, status=Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:
            logger.exception("Heartbeat for execution %s stopped", execution_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{execution_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
