"""Following one Job of a session: watch and log threads, and the step results they carry.

The supervisor in each container of the pod writes one record per step on its stdout, which
is the container's log (``sandbox.supervisor`` holds the protocol). Nothing else is trusted:
each record must carry the nonce of its container's stream and name the step the Job is on,
and each step must report within its wall time plus ``grace_s`` of the one before (the first,
once its container runs; until then the pod has ``pending_timeout_s`` to start it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from executions.backends.kubernetes.manifests import (
    COMPILE,
    SESSION,
    KubernetesOptions,
    Part,
    Step,
)
from executions.backends.kubernetes.session import SessionSteps
from sandbox import supervisor
from sandbox.contract import ErrorKind, RunResult, compiled

logger = logging.getLogger(__name__)

# What a run reports when someone else (a cancel, the janitor, an operator) removed its Job.
REMOVED = "The sandbox was stopped and removed before it finished."
# Waiting reasons that will not fix themselves: fail at once instead of waiting.
START_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# The status a container killed by SIGKILL ends with, as the shell and the supervisor say it.
SIGKILLED = 128 + 9


class _Failure(Exception):
    """Ends the current step with ``RunResult.failure(kind, message)``."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _LogFollower:
    """Follows one container's log in a thread, putting ``("log", container, chunk)`` on the
    queue as bytes arrive and ``("log-end", container, error)`` once, reading at most
    ``cap`` bytes."""

    def __init__(
        self, core: Any, namespace: str, pod: str, container: str, cap: int, events: queue.Queue
    ) -> None:
        self.core, self.namespace, self.pod, self.container = core, namespace, pod, container
        self.cap = cap
        self.events = events
        self._lock = threading.Lock()
        self._response: Any = None
        self._stopped = False
        self.thread = threading.Thread(target=self._follow, name=f"kube-log-{pod}", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        error: BaseException | None = None
        try:
            response = self.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container=self.container,
                follow=True,
                limit_bytes=self.cap,
                _preload_content=False,
            )
            with self._lock:
                self._response = response
                if self._stopped:
                    return
            for chunk in response.stream(64 * 1024, decode_content=False):
                if self._stopped:
                    return
                self.events.put(("log", self.container, bytes(chunk)))
        except Exception as exc:
            error = exc
        finally:
            self._close()
            if not self._stopped:
                self.events.put(("log-end", self.container, error))

    def _close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.release_conn()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._close()


class _Watcher:
    """Watches one kind of object in a thread and puts ``(kind, type, object)`` on a queue.

    Each stream starts without a resource version, so it opens with the current state
    (synthetic ``ADDED`` events) and a resumed watch can never miss a transition. Selectors
    narrow what the server sends; ``accept`` re-checks, since not every server applies them.
    """

    def __init__(
        self,
        kind: str,
        list_fn: Any,
        namespace: str,
        selectors: dict[str, str],
        accept: Any,
        events: queue.Queue,
        timeout_s: int,
    ) -> None:
        self.kind, self.list_fn, self.namespace = kind, list_fn, namespace
        self.selectors, self.accept, self.events = selectors, accept, events
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self.thread = threading.Thread(target=self._run, name=f"kube-watch-{kind}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._watch = watch.Watch()
            try:
                for event in self._watch.stream(
                    self.list_fn,
                    self.namespace,
                    timeout_seconds=self.timeout_s,
                    # Also bounds a server that ignores timeout_seconds, or a dead connection.
                    _request_timeout=(10, self.timeout_s + 5),
                    deserialize=False,
                    **self.selectors,
                ):
                    if self._stop.is_set():
                        return
                    obj = event.get("object") or {}
                    if self.accept(obj):
                        self.events.put((self.kind, event.get("type"), obj))
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status == 410:  # expired: start again from the current state
                    continue
                self.events.put(("error", self.kind, exc))
                return
            except urllib3.exceptions.ReadTimeoutError:
                continue  # resume
            except Exception as exc:
                if not self._stop.is_set():
                    self.events.put(("error", self.kind, exc))
                return

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()


@dataclass
class _Container:
    """What the run knows of one container of its pod.

    Its log is read apart from the other container's, so its records may arrive before the
    step before them (in the other container) has its result: each is checked against the
    container's own next step as it arrives, and kept in ``received`` until its turn.
    """

    reader: supervisor.RecordReader
    steps: deque[Step]  # its steps still without a record, in order
    cap: int  # the most its log may hold: every record of its steps
    received: deque[supervisor.Record] = field(default_factory=deque)
    broken: str = ""  # why its log stopped being trusted, after the records in ``received``
    running_seen: float | None = None  # monotonic, when first seen running (or ended)
    terminated: dict[str, Any] | None = None
    terminated_seen: float | None = None
    follower: _LogFollower | None = None
    log_done: bool = False


def _statuses(pod: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {s.get("name", ""): s for s in (pod.get("status") or {}).get(key) or []}


def _deadline_exceeded(job: Mapping[str, Any]) -> bool:
    return any(
        condition.get("type") in ("Failed", "FailureTarget")
        and condition.get("status") == "True"
        and condition.get("reason") == "DeadlineExceeded"
        for condition in (job.get("status") or {}).get("conditions") or []
    )


class JobFollower:
    """Turns what one Job's pod and logs say into the results of the session's steps.

    ``follow`` returns when every step of the part has its result, when the session is over
    (the observer stopped it, or the compile step failed), or when a case's running out of
    memory killed the container: that is the case's result, and the cases after it go on in
    a new part. It raises ``_Failure`` for the current step when the infrastructure fails.
    ``stream_error`` turns a broken watch into that ``_Failure``; ``read_job`` reads the Job.
    """

    def __init__(
        self,
        *,
        core: Any,
        part: Part,
        steps: SessionSteps,
        options: KubernetesOptions,
        events: queue.Queue,
        stream_error: Callable[[str, BaseException], _Failure],
        read_job: Callable[[], Any],
    ) -> None:
        self.core, self.part, self.steps, self.options = core, part, steps, options
        self.events, self.stream_error, self.read_job = events, stream_error, read_job
        cases = part.cases
        self.part_steps = cases if part.compile is None else [part.compile, *cases]
        self.at = 0  # the part's step being run
        self.containers = {
            SESSION: _Container(
                supervisor.RecordReader(
                    part.nonce, max(s.limits.output_bytes for s in cases), line_ended=True
                ),
                deque(cases),
                sum(step.log_bytes for step in cases),
            )
        }
        if part.compile is not None:
            self.containers[COMPILE] = _Container(
                supervisor.RecordReader(
                    part.compile_nonce, part.compile.limits.output_bytes, line_ended=True
                ),
                deque([part.compile]),
                part.compile.log_bytes,
            )
        self.progress_at = time.monotonic()  # the Job's creation, then the last record
        self.pending_reason = ""
        self.pod_name = ""
        self.pod_failure = ""

    def stop(self) -> None:
        for state in self.containers.values():
            if state.follower is not None:
                state.follower.stop()

    # -- where the part stands

    @property
    def step(self) -> Step:
        return self.part_steps[self.at]

    @property
    def owner(self) -> str:
        """The container that runs the current step."""
        return COMPILE if self.step.kind == "K" else SESSION

    def _done(self) -> bool:
        return self.steps.over or self.at == len(self.part_steps)

    def _describe(self, step: Step) -> str:
        return "the compile step" if step.kind == "K" else f"case {step.index}"

    # -- the loop

    def follow(self) -> None:
        # The watches see a deletion from their start on; one before it, only a read sees.
        if self._job_removed():
            raise _Failure(ErrorKind.CANCELLED, REMOVED)
        while not self._done():
            deadline = self._deadline()
            if deadline is None:
                return  # the container ran out of memory: its case's result is reported
            try:
                kind, *payload = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if kind == "error":
                raise self.stream_error(payload[0], payload[1])
            if kind == "log":
                self._on_log(payload[0], payload[1])
            elif kind == "log-end":
                container, error = payload
                self.containers[container].log_done = True
                if error is not None:
                    logger.info("log of %s/%s ended: %s", self.part.name, container, error)
            elif kind == "job":
                self._on_job(payload[0], payload[1])
            elif kind == "pod":
                self._on_pod(payload[0], payload[1])

    def _deadline(self) -> float | None:
        """When the current step must have moved on; raises ``_Failure`` once it is past, and
        returns None when the step's container ended with its result (out of memory)."""
        now = time.monotonic()
        state = self.containers[self.owner]
        step = self.step
        if state.terminated is not None:
            assert state.terminated_seen is not None
            deadline = state.terminated_seen + self.options.grace_s
            if state.log_done or now >= deadline:
                self._container_ended(state)
                return None
            return deadline
        if state.running_seen is not None:
            limit_s = step.limits.wall_time_s + self.options.grace_s
            deadline = max(state.running_seen, self.progress_at) + limit_s
            if now >= deadline:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"The session supervisor did not report {self._describe(step)} within "
                    f"{limit_s:g} s; the sandbox Job {self.part.name} was deleted.",
                )
            return deadline
        deadline = self.progress_at + self.options.pending_timeout_s
        if now >= deadline:
            if self._job_removed():
                # Cancelled as the watch began: it never saw the Job to see it go.
                raise _Failure(ErrorKind.CANCELLED, REMOVED)
            raise _Failure(ErrorKind.BACKEND_ERROR, self._pending_message())
        return deadline

    # -- records

    def _on_log(self, container: str, chunk: bytes) -> None:
        state = self.containers[container]
        if state.broken:
            return
        try:
            for record in state.reader.feed(chunk):
                if not record.failed:
                    self._expect(container, state, record)
                state.received.append(record)
        except supervisor.ProtocolError as exc:
            state.broken = (
                f"The session supervisor's log broke the protocol ({exc}); its results are "
                "not trusted."
            )
        self._take_records()

    def _expect(self, container: str, state: _Container, record: supervisor.Record) -> None:
        """``record`` must be the result of the container's next step."""
        if not state.steps:
            raise supervisor.ProtocolError(f"a record after the last step of {container}")
        step = state.steps.popleft()
        if record.index != step.index:
            raise supervisor.ProtocolError(
                f"a record of step {record.index} where {self._describe(step)} was next"
            )

    def _take_records(self) -> None:
        """Report the steps whose records have arrived, in the order they ran."""
        while not self._done():
            state = self.containers[self.owner]
            if not state.received:
                if state.broken:
                    raise _Failure(ErrorKind.BACKEND_ERROR, state.broken)
                return
            record = state.received.popleft()
            if record.failed:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR, f"The session supervisor gave up: {record.message}"
                )
            self._step_ended(record.result)

    def _step_ended(self, result: RunResult) -> None:
        step = self.step
        if step.kind == "K" and self.steps.current.kind != "K":
            # A later part compiles again, for itself: its result was reported once already.
            if not compiled(result):
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"The compile step, run again for the cases from {self.part.first} on, "
                    f"did not succeed this time (exit code {result.exit_code}).",
                )
        else:
            self.steps.ended(result)
        self.at += 1
        self.progress_at = time.monotonic()

    def _container_ended(self, state: _Container) -> None:
        """The current step's container ended without reporting it. Out of memory is the
        step's result (the kernel killed the supervisor with it, perhaps inside a record);
        anything else fails it."""
        terminated = state.terminated or {}
        if terminated.get("reason") == "OOMKilled":
            result = RunResult(oom_killed=True)
            result.record_exit(SIGKILLED)
            started = max(state.running_seen or self.progress_at, self.progress_at)
            result.wall_time_ms = int(((state.terminated_seen or started) - started) * 1000)
            self._step_ended(result)
            return
        if state.reader.pending:
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The log of the sandbox's {self.owner} container ended inside a record; its "
                "results are not trusted.",
            )
        said = f"exit code {terminated.get('exitCode', '?')}"
        if terminated.get("reason"):
            said += f", {terminated['reason']}"
        if self.pod_failure:
            said += f"; the pod failed: {self.pod_failure}"
        raise _Failure(
            ErrorKind.BACKEND_ERROR,
            f"The sandbox's {self.owner} container ended before {self._describe(self.step)} "
            f"reported ({said}).",
        )

    # -- the Job and its pod

    def _on_job(self, event_type: str, job: dict[str, Any]) -> None:
        if event_type == "DELETED" or (job.get("metadata") or {}).get("deletionTimestamp"):
            raise _Failure(ErrorKind.CANCELLED, REMOVED)
        if _deadline_exceeded(job):
            self._job_deadline()

    def _job_deadline(self) -> None:
        raise _Failure(
            ErrorKind.BACKEND_ERROR,
            f"The sandbox Job {self.part.name} reached its deadline before "
            f"{self._describe(self.step)} reported.",
        )

    def _on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        self.pod_name = meta.get("name", self.pod_name)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._on_pod_gone()
        status = pod.get("status") or {}
        now = time.monotonic()
        every = {**_statuses(pod, "initContainerStatuses"), **_statuses(pod, "containerStatuses")}
        for name, state in self.containers.items():
            container_state = (every.get(name) or {}).get("state") or {}
            if ("running" in container_state or "terminated" in container_state) and (
                state.running_seen is None
            ):
                state.running_seen = now
            if "terminated" in container_state and state.terminated is None:
                state.terminated = container_state["terminated"]
                state.terminated_seen = now
            if state.follower is None and state.running_seen is not None:
                state.follower = _LogFollower(
                    self.core, self.options.namespace, self.pod_name, name, state.cap, self.events
                )
        for name, container_status in every.items():
            waiting = (container_status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in START_FAILURES:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"The sandbox pod could not start container {name!r}: {reason}: "
                    f"{waiting.get('message', '')} (image {self.part.session.image!r})".replace(
                        ":  (", " ("
                    ),
                )
            if reason:
                self.pending_reason = f"{name}: {reason} {waiting.get('message', '')}".strip()
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                self.pending_reason = (
                    f"{condition.get('reason', 'not scheduled')}: {condition.get('message', '')}"
                ).strip()
        if status.get("phase") == "Failed":
            self.pod_failure = f"{status.get('reason', '')} {status.get('message', '')}".strip()
            # With restartPolicy Never a failed pod runs nothing more.
            owner = self.containers[self.owner]
            if owner.terminated is None:
                owner.terminated, owner.terminated_seen = {}, now

    def _on_pod_gone(self) -> None:
        """The pod is going away before the part ended: the Job's deadline (the Job controller
        deletes the pod, possibly before it marks the Job failed) or a removal."""
        try:
            job = self.read_job()
        except ApiException as exc:
            if exc.status != 404:
                raise
            job = None
        meta = getattr(job, "metadata", None)
        if job is None or meta is None or meta.deletion_timestamp:
            raise _Failure(ErrorKind.CANCELLED, REMOVED)
        conditions = (job.status.conditions or []) if job.status else []
        if any(
            c.type in ("Failed", "FailureTarget")
            and c.status == "True"
            and c.reason == "DeadlineExceeded"
            for c in conditions
        ):
            self._job_deadline()
        raise _Failure(
            ErrorKind.CANCELLED, "The sandbox pod was removed before the session finished."
        )

    def _job_removed(self) -> bool:
        """Is the Job gone, or going? False when the API cannot say."""
        try:
            job = self.read_job()
        except ApiException as exc:
            return exc.status == 404
        except Exception:
            return False
        return bool(getattr(job.metadata, "deletion_timestamp", None))

    def _pending_message(self) -> str:
        timeout = self.options.pending_timeout_s
        name = self.part.name
        if self.pending_reason:
            return (
                f"The sandbox pod of Job {name} did not start within {timeout} s: "
                f"{self.pending_reason}"
            )
        if not self.pod_name:
            return (
                f"The Job {name} created no pod within {timeout} s. Its events say why (a "
                f"PodSecurity or ResourceQuota refusal, for example): kubectl -n "
                f"{self.options.namespace} describe job {name}"
            )
        return f"The sandbox pod {self.pod_name} did not start within {timeout} s."
