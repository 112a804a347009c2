"""Run sandboxes on remote execution services; the only module that talks to them.

The platform holds no Docker client and no socket: every session is a signed HTTP call to one
of the services in ``urls`` (``python -m execution_service`` on the execution nodes); a single
run is a session of one case. A session goes:

1. pick the service with the most free capacity from its last ``/v1/health`` answer (cached
   for ``health_ttl_s``; unreachable services go last);
2. ``PUT /v1/sessions/{handle}`` (idempotent on the service: a retry returns the same
   session); on a connection failure, a 429 or a 5xx try the next service, within
   ``failover_budget_s``;
3. long-poll ``GET /v1/sessions/{handle}?after=N&wait=...`` for the results past the ``N``
   already reported, and hand each to the observer in order, until the session is done or
   the observer stops it (then ``DELETE`` cancels it); at most the wall times of all its
   steps plus ``grace_s``, past that it is cancelled and reported as a backend error.

The service's answers are not trusted: each is read up to a cap, must parse
(``sandbox.wire``), and must bring the results of the steps that are due, in order; anything
else is a protocol error. A service that stops answering mid-session ends it with
``BACKEND_ERROR`` (the session had started there) and a message naming it (retried for
``poll_retry_s`` first, to ride out a blip); none taking it at all is ``UNAVAILABLE``. A
failure of the infrastructure is the result of the step it happened in, reported once;
``run_session`` never raises. All HTTP goes through ``requests`` here; signing is
``sandbox.signing``, shared with the service.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from sandbox import budget, signing, wire
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
    Session,
    SessionObserver,
)
from sandbox.options import OptionError, names

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A service answered with an error or did not answer; ``retry_elsewhere`` if another may."""

    def __init__(self, message: str, *, retry_elsewhere: bool, kind: ErrorKind) -> None:
        super().__init__(message)
        self.retry_elsewhere = retry_elsewhere
        self.kind = kind


@dataclass(frozen=True)
class _Answer:
    """A service's answer, read up to a cap: a node is not trusted with the platform's memory."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# Health, submit and cancel answers are small; a result holds at most two capped streams in
# base64 (4/3 of the bytes) plus a few fields.
CONTROL_ANSWER_BYTES = 64 * 1024
ERROR_MESSAGE_CHARS = 2000


def result_answer_bytes(output_bytes: int) -> int:
    return 3 * output_bytes + CONTROL_ANSWER_BYTES


def _service_urls(value: Any) -> tuple[str, ...]:
    return tuple(url.rstrip("/") for url in names(value))


@dataclass(frozen=True)
class RemoteOptions:
    """The remote backend's options and their defaults."""

    # One or more execution service base URLs (a list or a comma-separated string).
    urls: tuple[str, ...] = field(default=(), metadata={"convert": _service_urls})
    # The signing secret shared with the services.
    secret: str = ""
    # Seconds per HTTP call, long polls aside.
    timeout_s: float = 5.0
    # Seconds a session may take beyond the wall times of its steps before it is cancelled.
    grace_s: float = 15.0
    # Seconds of one long poll.
    poll_wait_s: float = 5.0
    # Seconds a service may stop answering mid-session before the session is given up.
    poll_retry_s: float = 2.0
    # Seconds to find a service that takes the session.
    failover_budget_s: float = 10.0
    # Seconds a service's health answer is reused when picking one.
    health_ttl_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise OptionError(
                "urls",
                "The remote backend needs EXECUTION_REMOTE_URLS: the execution services' URLs.",
            )
        try:
            signing.check_secret(self.secret)
        except ValueError as exc:
            raise OptionError("secret", str(exc)) from exc


class RemoteBackend(ExecutionBackend):
    """Sends each session to a remote execution service. Options: ``RemoteOptions``."""

    name = "remote"
    options_class = RemoteOptions
    options: RemoteOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.urls = self.options.urls
        self._local = threading.local()
        self._health_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    # -- HTTP

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _call(
        self,
        base: str,
        method: str,
        path: str,
        payload: Any = None,
        timeout_s: float | None = None,
        max_bytes: int = CONTROL_ANSWER_BYTES,
    ) -> _Answer:
        """One signed call. Raises ``requests.RequestException`` when the service cannot be
        reached, and ``ServiceError`` when its answer is longer than ``max_bytes``."""
        body = wire.dumps(payload) if payload is not None else b""
        headers = signing.sign(self.options.secret, method, path, body)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        with self._session().request(
            method,
            base + path,
            data=body,
            headers=headers,
            timeout=timeout_s or self.options.timeout_s,
            stream=True,
        ) as response:
            received = bytearray()
            for chunk in response.iter_content(chunk_size=64 * 1024):
                received += chunk
                if len(received) > max_bytes:
                    raise ServiceError(
                        f"Execution service {base} answered {method} {path.split('?')[0]} "
                        f"with more than {max_bytes} bytes; the answer was dropped.",
                        retry_elsewhere=False,
                        kind=ErrorKind.BACKEND_ERROR,
                    )
            return _Answer(response.status_code, bytes(received))

    def _service_health(self, base: str, *, fresh: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._health_cache.get(base)
        if cached and not fresh and now - cached[0] < self.options.health_ttl_s:
            return cached[1]
        try:
            response = self._call(base, "GET", "/v1/health")
            data = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError, ServiceError):
            data = None
        with self._lock:
            self._health_cache[base] = (now, data)
        return data

    def _candidates(self) -> list[str]:
        """Services by free capacity, most first; unreachable or unhealthy ones last."""

        def free(base: str) -> int:
            data = self._service_health(base)
            if not data or not data.get("ok"):
                return -1
            return int(data.get("capacity", 0)) - int(data.get("in_use", 0))

        return sorted(self.urls, key=free, reverse=True)

    # -- the contract

    def _run(self, request: RunRequest) -> RunResult:
        return self.run_one_case(request)

    def run_session(self, session: Session, observer: SessionObserver) -> None:
        """Run ``session`` on a service and report its steps as they end (see the module
        docstring); cancel it on the service if the observer stops it or it is given up."""
        if not observer.case_starting(0, session.handle):
            return
        reporter = _Reporter(session, observer)
        problem = session.problem()
        if problem:
            reporter.fail(ErrorKind.BACKEND_ERROR, problem)
            return
        base, finished = "", False
        try:
            base = self._submit(session)
            finished = self._follow(base, reporter)
        except ServiceError as exc:
            reporter.fail(exc.kind, str(exc))
        except Exception as exc:  # run_session must not raise for infrastructure failures
            logger.exception("remote backend failed on execution %s", session.execution_id)
            reporter.fail(
                ErrorKind.BACKEND_ERROR, f"Remote backend error: {type(exc).__name__}: {exc}"
            )
        if base and not finished:
            self._cancel_on(base, session.handle)

    def _submit(self, session: Session) -> str:
        """PUT the session on a service that takes it; return that service's URL."""
        payload = wire.session_to_json(session)
        path = f"/v1/sessions/{session.handle}"
        deadline = time.monotonic() + self.options.failover_budget_s
        errors: list[str] = []
        while True:
            for base in self._candidates():
                try:
                    response = self._call(base, "PUT", path, payload)
                except requests.RequestException as exc:
                    errors.append(f"{base}: unreachable ({type(exc).__name__})")
                    with self._lock:
                        self._health_cache[base] = (time.monotonic(), None)
                    continue
                if response.status_code in (200, 202):
                    return base
                message = _error_text(response)
                if response.status_code == 429 or response.status_code >= 500:
                    errors.append(f"{base}: {response.status_code} {message}")
                    continue
                raise ServiceError(
                    f"Execution service {base} refused the session ({response.status_code}): "
                    f"{message}",
                    retry_elsewhere=False,
                    kind=ErrorKind.BACKEND_ERROR,
                )
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise ServiceError(
            "No execution service took the session within "
            f"{self.options.failover_budget_s:g} s: " + "; ".join(errors[-len(self.urls) :]),
            retry_elsewhere=True,
            kind=ErrorKind.UNAVAILABLE,
        )

    def _follow(self, base: str, reporter: _Reporter) -> bool:
        """Poll ``base`` and report each new result until the service finished the session
        (True) or the observer stopped it (False: it may still be running there). Raises
        ``ServiceError`` when the service fails, lies or runs late."""
        handle = reporter.session.handle
        path = f"/v1/sessions/{handle}"
        deadline = time.monotonic() + budget.session_wall_s(reporter.session) + self.options.grace_s
        lost_since: float | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    f"Execution service {base} did not finish session {handle} within the "
                    f"wall times of its steps plus {self.options.grace_s:g} s; it was "
                    "cancelled.",
                    retry_elsewhere=False,
                    kind=ErrorKind.BACKEND_ERROR,
                )
            wait = max(0.0, min(self.options.poll_wait_s, remaining))
            try:
                response = self._call(
                    base,
                    "GET",
                    f"{path}?after={reporter.position}&wait={wait:.2f}",
                    timeout_s=wait + self.options.timeout_s,
                    max_bytes=reporter.answer_bytes(),
                )
            except requests.RequestException as exc:
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since >= self.options.poll_retry_s:
                    raise ServiceError(
                        f"Execution service {base} stopped answering during session "
                        f"{handle}: {type(exc).__name__}: {exc}",
                        retry_elsewhere=False,
                        kind=ErrorKind.BACKEND_ERROR,  # the session had started there
                    ) from exc
                time.sleep(0.1)
                continue
            lost_since = None
            if response.status_code != 200:
                raise ServiceError(
                    f"Execution service {base} lost session {handle} "
                    f"({response.status_code}): {_error_text(response)}",
                    retry_elsewhere=False,
                    kind=ErrorKind.BACKEND_ERROR,  # the session had started there
                )
            try:
                progress = wire.progress_from_json(response.json())
            except ValueError as exc:
                raise _protocol_error(
                    base, handle, f"an answer that does not parse: {exc}"
                ) from exc
            problem = reporter.problem(progress)
            if problem:
                raise _protocol_error(base, handle, problem)
            if not reporter.report(progress.results) and not reporter.ran_to_its_end:
                return progress.state == "done"
            if progress.state == "done":
                if not reporter.over:
                    raise _protocol_error(
                        base, handle, f"the end of the session before {reporter.due()} reported"
                    )
                return True
            # After its last result a session still removes its sandbox: wait for "done",
            # so that nothing of it is left when this returns.

    def _cancel_on(self, base: str, handle: str) -> bool:
        try:
            response = self._call(base, "DELETE", f"/v1/sessions/{handle}")
        except (requests.RequestException, ServiceError):
            return False
        return response.status_code == 200

    def cancel(self, handle: str) -> None:
        """Cancel ``handle`` on every service that knows it; unknown handles are ignored."""
        for base in self.urls:
            self._cancel_on(base, handle)

    def health(self) -> Health:
        answers = {base: self._service_health(base, fresh=True) for base in self.urls}
        live = {base: data for base, data in answers.items() if data and data.get("ok")}
        capacity = sum(int(data.get("capacity", 0)) for data in live.values())
        in_use = sum(int(data.get("in_use", 0)) for data in live.values())
        parts = []
        for base, data in answers.items():
            if data is None:
                parts.append(f"{base}: unreachable or refused the signature")
            else:
                state = "ok" if data.get("ok") else "not ready"
                parts.append(
                    f"{base}: {state}, {data.get('in_use')}/{data.get('capacity')} in use "
                    f"({data.get('detail', '')})"
                )
        return Health(
            ok=bool(live),
            detail=f"{len(live)} of {len(self.urls)} execution services ready. " + " ".join(parts),
            version=",".join(sorted({str(d.get("version", "")) for d in live.values()})),
            capacity=capacity,
            in_use=in_use,
            extra={"services": answers},
        )

    def describe(self) -> Isolation:
        return Isolation(facts={"execution services": ", ".join(self.urls)})


class _Reporter:
    """Hands a remote session's results to its observer, in order and held to the session's
    caps; ``fail`` reports the failure of the step that is due, once."""

    def __init__(self, session: Session, observer: SessionObserver) -> None:
        self.session = session
        self.observer = observer
        self.steps = wire.steps_of(session)
        self.position = 0  # results reported so far
        self.over = False
        # The service ends a session by itself after its last step or a step that ends it.
        self.ran_to_its_end = False

    def due(self) -> wire.Step:
        return self.steps[self.position]

    def answer_bytes(self) -> int:
        """The longest answer that can hold the results of every step still due."""
        return sum(
            result_answer_bytes(self._output_bytes(step)) for step in self.steps[self.position :]
        )

    def problem(self, progress: wire.Progress) -> str:
        """Why ``progress`` cannot be the session's next results, or ``""``."""
        if self.ran_to_its_end and progress.results:
            return f"results after {self.steps[self.position - 1]} ended the session"
        due = self.steps[self.position :]
        if len(progress.results) > len(due):
            return (
                f"{self.position + len(progress.results)} results for a session of "
                f"{len(self.steps)} steps"
            )
        for number, ((step, result), expected) in enumerate(
            zip(progress.results, due, strict=False)
        ):
            if step != expected:
                never = step.kind == wire.CASE and step.index >= len(self.session.stdins)
                return f"a result for {step}, which " + (
                    "the session does not have" if never else f"came where {expected} was due"
                )
            if wire.ends_session(step, result) and number < len(progress.results) - 1:
                return f"results after {step} ended the session"
        return ""

    def report(self, results: list[tuple[wire.Step, RunResult]]) -> bool:
        """Tell the observer of each result; False once the session is over for it."""
        for step, result in results:
            self.position += 1
            held = recapped(result, self._output_bytes(step), self.session.handle)
            self.ran_to_its_end = self.position == len(self.steps) or wire.ends_session(step, held)
            go_on = self._tell(step, held) and not self.ran_to_its_end and self._starting()
            if not go_on:
                self.over = True
                return False
        return True

    def _starting(self) -> bool:
        """Announce the case that is due (a case: the compile step can only come first);
        case 0 was announced before the session was sent."""
        index = self.due().index
        return index == 0 or self.observer.case_starting(index, self.session.handle)

    def fail(self, kind: ErrorKind, message: str) -> None:
        if self.over or self.position == len(self.steps):
            return
        self.over = True
        self._tell(self.due(), RunResult.failure(kind, message, handle=self.session.handle))

    def _tell(self, step: wire.Step, result: RunResult) -> bool:
        if step.kind == wire.COMPILE:
            return self.observer.compile_ended(result)
        return self.observer.case_ended(step.index, result)

    def _output_bytes(self, step: wire.Step) -> int:
        if step.kind == wire.COMPILE and self.session.compile is not None:
            return self.session.compile.limits.output_bytes
        return self.session.limits.output_bytes


def recapped(result: RunResult, output_bytes: int, handle: str) -> RunResult:
    """``result`` held to the caps the platform asked for: a compromised node cannot make the
    platform store more output than the step allowed, nor a longer message, nor rename the
    sandbox."""
    if len(result.stdout) > output_bytes:
        result.stdout, result.stdout_truncated = result.stdout[:output_bytes], True
    if len(result.stderr) > output_bytes:
        result.stderr, result.stderr_truncated = result.stderr[:output_bytes], True
    result.error_message = result.error_message[:ERROR_MESSAGE_CHARS]
    result.handle = handle
    return result


def _protocol_error(base: str, handle: str, what: str) -> ServiceError:
    return ServiceError(
        f"Execution service {base} broke the protocol in session {handle} ({what}); its "
        "results are not trusted.",
        retry_elsewhere=False,
        kind=ErrorKind.BACKEND_ERROR,
    )


def _error_text(response: _Answer) -> str:
    try:
        return str(response.json().get("error", ""))[:500]
    except (ValueError, AttributeError):
        return response.body[:200].decode(errors="replace")


__all__: Sequence[str] = ("RemoteBackend",)
