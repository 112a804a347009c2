"""Following a run's Job and Pod to an outcome: watch and log threads, and what they tell."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from executions.backends.kubernetes.manifests import PREPARE, PROGRAM, STDERR, KubernetesOptions
from sandbox.contract import ErrorKind, RunRequest, RunResult

logger = logging.getLogger(__name__)

# Waiting reasons that will not fix themselves: fail at once instead of waiting.
# What a run reports when someone else (a cancel, the janitor, an operator) removed its Job.
REMOVED = "The sandbox was stopped and removed before it finished."
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


class _Failure(Exception):
    """Ends a run with ``RunResult.failure(kind, message)``."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _LogFollower:
    """Follows one container's log in a thread, keeping at most ``cap`` bytes."""

    def __init__(
        self, core: Any, namespace: str, pod: str, container: str, cap: int, events: queue.Queue
    ) -> None:
        self.core, self.namespace, self.pod, self.container = core, namespace, pod, container
        self.cap = cap
        self.events = events
        self.data = bytearray()
        self.truncated = False
        self.done = False
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
                limit_bytes=self.cap + 1,
                _preload_content=False,
            )
            with self._lock:
                self._response = response
                if self._stopped:
                    return
            for chunk in response.stream(64 * 1024, decode_content=False):
                room = self.cap - len(self.data)
                self.data += chunk[:room]
                if len(chunk) > room:
                    self.truncated = True
                    break
        except Exception as exc:
            error = exc
        finally:
            self._close()
            self.done = True
            if not self._stopped:
                self.events.put(("log", self.container, error))

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
class _Progress:
    """What the run has learnt so far."""

    created_at: float
    events: queue.Queue
    started_at: float | None = None  # monotonic, when the program was first seen running
    terminated: dict[str, Any] | None = None  # the program's terminated state
    terminated_seen: float | None = None
    pending_reason: str = ""
    pod_name: str = ""
    pod_gone: bool = False
    followers: dict[str, _LogFollower] = field(default_factory=dict)


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _statuses(pod: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {s.get("name", ""): s for s in (pod.get("status") or {}).get(key) or []}


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class FollowingMixin:
    """The part of ``KubernetesBackend`` that follows a run's Job and Pod to an outcome."""

    options: KubernetesOptions

    @property
    def namespace(self) -> str:
        return self.options.namespace

    def _follow(
        self,
        core: Any,
        batch: Any,
        request: RunRequest,
        name: str,
        events: queue.Queue,
        progress: _Progress,
    ) -> RunResult:
        """Consume watch and log events until the run has an outcome."""
        wall_s = request.limits.wall_time_s
        pending_deadline = progress.created_at + self.options.pending_timeout_s
        result = RunResult(handle=request.handle)
        while True:
            now = time.monotonic()
            if progress.terminated is not None:
                logs_done = all(f.done for f in progress.followers.values())
                grace_over = now >= (progress.terminated_seen or now) + self.options.grace_s
                if logs_done or grace_over:
                    return self._finish(progress, result)
                deadline = (progress.terminated_seen or now) + self.options.grace_s
            elif progress.started_at is not None:
                deadline = progress.started_at + wall_s
                if now >= deadline:
                    result.timed_out = True
                    result.wall_time_ms = int((now - progress.started_at) * 1000)
                    return result
            else:
                deadline = pending_deadline
                if now >= deadline:
                    if self._job_removed(batch, name):
                        # Cancelled before the watch began: it never saw the Job to see it go.
                        raise _Failure(ErrorKind.CANCELLED, REMOVED)
                    raise _Failure(ErrorKind.BACKEND_ERROR, self._pending_message(name, progress))
            try:
                kind, *payload = events.get(timeout=max(0.01, deadline - now))
            except queue.Empty:
                continue
            if kind == "error":
                self._raise_stream_error(payload[0], payload[1])
            elif kind == "log":
                container, error = payload
                follower = progress.followers[container]
                if follower.truncated:
                    # One byte over the cap: stop here; the Job is deleted on the way out.
                    result.wall_time_ms = int(
                        (time.monotonic() - (progress.started_at or now)) * 1000
                    )
                    return result
                if error is not None and progress.terminated is None:
                    logger.info("log of %s/%s ended: %s", name, container, error)
            elif kind == "job":
                self._on_job(name, payload[0], payload[1], progress, result, wall_s)
                if result.timed_out:
                    return result
            elif kind == "pod":
                self._on_pod(core, request, name, payload[0], payload[1], progress)
                if progress.pod_gone and progress.terminated is None:
                    self._on_pod_gone(batch, name, progress, result)
                    return result

    def _on_job(
        self,
        name: str,
        event_type: str,
        job: dict[str, Any],
        progress: _Progress,
        result: RunResult,
        wall_s: float,
    ) -> None:
        if event_type == "DELETED" or (job.get("metadata") or {}).get("deletionTimestamp"):
            raise _Failure(ErrorKind.CANCELLED, REMOVED)
        for condition in _conditions(job):
            # FailureTarget comes first: the controller then deletes the pod, then says Failed.
            if condition.get("type") not in ("Failed", "FailureTarget"):
                continue
            if condition.get("status") != "True":
                continue
            if condition.get("reason") == "DeadlineExceeded":
                if progress.terminated is not None:
                    return  # the program ended first; its own status decides
                self._deadline_reached(name, progress, result)

    def _on_pod(
        self,
        core: Any,
        request: RunRequest,
        name: str,
        event_type: str,
        pod: dict[str, Any],
        progress: _Progress,
    ) -> None:
        meta = pod.get("metadata") or {}
        progress.pod_name = meta.get("name", progress.pod_name)
        status = pod.get("status") or {}
        inits = _statuses(pod, "initContainerStatuses")
        containers = _statuses(pod, "containerStatuses")
        program = containers.get(PROGRAM) or {}
        state = program.get("state") or {}
        if "terminated" in state and progress.terminated is None:
            progress.terminated = state["terminated"]
            progress.terminated_seen = time.monotonic()
        if ("running" in state or "terminated" in state) and progress.started_at is None:
            progress.started_at = time.monotonic()
        # Follow each container's log once it has one.
        for container, cap in (
            (PROGRAM, request.limits.output_bytes),
            (STDERR, request.limits.output_bytes),
        ):
            container_state = (containers.get(container) or {}).get("state") or {}
            if container not in progress.followers and (
                "running" in container_state or "terminated" in container_state
            ):
                progress.followers[container] = _LogFollower(
                    core, self.namespace, progress.pod_name, container, cap, progress.events
                )
        if progress.terminated is not None:
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            progress.pod_gone = True
            return
        # Preparation failed: the image lacks what the stream wiring needs.
        prepare = ((inits.get(PREPARE) or {}).get("state") or {}).get("terminated") or {}
        if prepare and prepare.get("exitCode", 0) != 0:
            detail = f"{prepare.get('reason', '')} {prepare.get('message', '')}".strip()
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox could not be prepared in image {request.image!r} (it needs "
                f"/bin/sh and mkfifo): exit code {prepare.get('exitCode')} {detail}".strip(),
            )
        for container, container_status in [*inits.items(), *containers.items()]:
            waiting = (container_status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in START_FAILURES:
                raise _Failure(
                    ErrorKind.BACKEND_ERROR,
                    f"The sandbox pod could not start container {container!r}: {reason}: "
                    f"{waiting.get('message', '')} (image {request.image!r})".replace(":  (", " ("),
                )
            if reason:
                progress.pending_reason = (
                    f"{container}: {reason} {waiting.get('message', '')}".strip()
                )
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                progress.pending_reason = (
                    f"{condition.get('reason', 'not scheduled')}: {condition.get('message', '')}"
                ).strip()
        if status.get("phase") == "Failed":
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox pod failed before the program ran: {status.get('reason', '')} "
                f"{status.get('message', '')}".strip(),
            )

    def _on_pod_gone(self, batch: Any, name: str, progress: _Progress, result: RunResult) -> None:
        """The pod is going away before the program ended: the Job's deadline (the Job
        controller deletes the pod, possibly before it marks the Job failed) or a removal."""
        try:
            job = batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            job = None
        conditions = (job.status.conditions or []) if job is not None and job.status else []
        deadline = any(
            c.type in ("Failed", "FailureTarget")
            and c.status == "True"
            and c.reason == "DeadlineExceeded"
            for c in conditions
        )
        if job is None or job.metadata is None or job.metadata.deletion_timestamp or not deadline:
            raise _Failure(
                ErrorKind.CANCELLED, "The sandbox pod was removed before the program finished."
            )
        self._deadline_reached(name, progress, result)

    def _deadline_reached(self, name: str, progress: _Progress, result: RunResult) -> None:
        """The Job's deadline ended the run: a time-out if the program had started, else the
        pod never got going, which is the infrastructure's failure, not the program's."""
        if progress.started_at is None:
            raise _Failure(
                ErrorKind.BACKEND_ERROR,
                f"The sandbox Job {name} reached its deadline before the program started. "
                f"{self._pending_message(name, progress)}",
            )
        result.timed_out = True
        result.wall_time_ms = int((time.monotonic() - progress.started_at) * 1000)

    def _finish(self, progress: _Progress, result: RunResult) -> RunResult:
        terminated = progress.terminated or {}
        code = int(terminated.get("exitCode", -1))
        result.record_exit(code)
        result.oom_killed = terminated.get("reason") == "OOMKilled"
        started = _parse_time(terminated.get("startedAt"))
        finished = _parse_time(terminated.get("finishedAt"))
        if started is not None and finished is not None and finished >= started:
            result.wall_time_ms = int((finished - started).total_seconds() * 1000)
        else:
            began = progress.started_at or progress.terminated_seen or time.monotonic()
            result.wall_time_ms = int(((progress.terminated_seen or began) - began) * 1000)
        return result

    def _job_removed(self, batch: Any, name: str) -> bool:
        """Is the Job gone, or going? False when the API cannot say."""
        try:
            job = batch.read_namespaced_job(name, self.namespace)
        except ApiException as exc:
            return exc.status == 404
        except Exception:
            return False
        return bool(getattr(job.metadata, "deletion_timestamp", None))

    def _pending_message(self, name: str, progress: _Progress) -> str:
        timeout = self.options.pending_timeout_s
        if progress.pending_reason:
            return (
                f"The sandbox pod of Job {name} did not start within {timeout} s: "
                f"{progress.pending_reason}"
            )
        if not progress.pod_name:
            return (
                f"The Job {name} created no pod within {timeout} s. Its events say why (a "
                f"PodSecurity or ResourceQuota refusal, for example): kubectl -n "
                f"{self.namespace} describe job {name}"
            )
        return f"The sandbox pod {progress.pod_name} did not start within {timeout} s."

    def _raise_stream_error(self, kind: str, exc: BaseException) -> None:
        """Raise ``_Failure`` for a watch of ``kind`` objects that broke with ``exc``."""
        raise NotImplementedError
