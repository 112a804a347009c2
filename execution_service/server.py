"""The execution service's HTTP API (``/v1/``) over a local execution backend.

* ``PUT /v1/sessions/{session_id}``: submit a session (JSON, see ``wire``): files, an optional
  compile step, the stdin of each case. Idempotent: the same body again returns the existing
  session (200); a different body under the same id is 409. A new session is 202. Limits
  (the session's or its compile step's), cases or stdin above the service's caps are 400; at
  capacity 429 with ``Retry-After``.
* ``GET /v1/sessions/{session_id}[?after=N][&wait=S]``: the state (``queued``, ``running``,
  ``done``) and the results of the steps after the first ``N``, in order (bytes
  base64-encoded). ``wait`` long-polls up to ``MAX_WAIT_S`` for a result beyond those ``N``
  or the end of the session, so a client sees each step as it ends.
* ``DELETE /v1/sessions/{session_id}``: cancel: stop the session's sandbox and run no further
  step; the step it stopped reports ``cancelled``.
* ``GET /v1/health``: backend health, capacity in use and total, service version.

Every request must be signed (``sandbox.signing``); anything else is 401 before the
body is parsed or the backend is touched. Finished sessions are kept for ``retention_s``
seconds and at most ``retention_count`` of them, then forgotten.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from execution_service import VERSION
from sandbox import wire
from sandbox.contract import ErrorKind, ExecutionBackend, RunResult, Session
from sandbox.policy import Limits
from sandbox.signing import SigningError, Verifier

logger = logging.getLogger("execution_service")

MAX_WAIT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """What the service accepts. ``caps`` bound every limit of every session it runs and of
    its compile step; a session has at most ``max_cases`` cases and ``max_stdin_bytes`` of
    stdin in all; ``max_concurrent_per_service`` sessions at once, more are refused (429)."""

    secret: str
    caps: Limits
    max_cases: int = 100
    max_stdin_bytes: int = 8 * 1024 * 1024
    max_concurrent_per_service: int = 4
    max_body_bytes: int = 16 * 1024 * 1024
    retention_s: float = 600.0
    retention_count: int = 1000
    allow_network: bool = False


class SessionRecord:
    """A submitted session and the results of its steps so far; the backend's observer.

    Thread-safe: the backend reports from the pool's thread while requests read and cancel.
    ``changed`` wakes the long polls whenever a step ends or the session does.
    """

    def __init__(self, session: Session, digest: str) -> None:
        self.session = session
        self.digest = digest
        self.steps = wire.steps_of(session)
        self.state = "queued"
        self.results: list[tuple[wire.Step, RunResult]] = []
        self.backend_handle = ""
        self.cancelled = False
        self.finished_at: float | None = None
        self.changed = threading.Condition()

    # -- the backend's observer: every answer is "go on" unless the session was cancelled

    def case_starting(self, index: int, handle: str) -> bool:
        with self.changed:
            self.state = "running"
            self.backend_handle = handle
            return not self.cancelled

    def compile_ended(self, result: RunResult) -> bool:
        return self._record(wire.Step(wire.COMPILE), result)

    def case_ended(self, index: int, result: RunResult) -> bool:
        return self._record(wire.Step(wire.CASE, index), result)

    def _record(self, step: wire.Step, result: RunResult) -> bool:
        with self.changed:
            self.results.append((step, result))
            self.changed.notify_all()
            return not (self.cancelled or wire.ends_session(step, result))

    # -- the service's side

    def cancel(self) -> str:
        """Run no further step; return the handle of the sandbox to stop now ("" for none)."""
        with self.changed:
            if self.state == "done":
                return ""
            self.cancelled = True
            return self.backend_handle

    def end(self, failure: RunResult | None) -> None:
        """The backend returned. The step it stopped at without a result gets ``failure``,
        else one saying why: a client never waits for a step that will not come."""
        with self.changed:
            step = self._unreported()
            if step is not None:
                self.results.append((step, failure or self._stopped(step)))
            self.state = "done"
            self.finished_at = time.time()
            self.changed.notify_all()

    def _unreported(self) -> wire.Step | None:
        if len(self.results) == len(self.steps):
            return None
        if self.results and wire.ends_session(*self.results[-1]):
            return None
        return self.steps[len(self.results)]

    def _stopped(self, step: wire.Step) -> RunResult:
        if self.cancelled:
            kind, message = ErrorKind.CANCELLED, f"The session was cancelled before {step} ran."
        else:
            kind, message = (
                ErrorKind.BACKEND_ERROR,
                f"The backend ended the session without a result for {step}.",
            )
        return RunResult.failure(kind, message, handle=self.session.handle)

    def wait(self, after: int, timeout_s: float) -> None:
        """Return once a step beyond the first ``after`` has a result, the session is done,
        or ``timeout_s`` passed."""
        with self.changed:
            self.changed.wait_for(
                lambda: self.state == "done" or len(self.results) > after, timeout_s
            )

    def summary(self) -> dict[str, Any]:
        with self.changed:
            return {"session_id": self.session.handle, "state": self.state}

    def progress(self, after: int) -> dict[str, Any]:
        with self.changed:
            return wire.progress_to_json(self.session.handle, self.state, self.results[after:])


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers)


class ExecutionService:
    """Sessions, their results and the pool that runs them; thread-safe."""

    def __init__(self, backend: ExecutionBackend, config: ServiceConfig) -> None:
        self.backend = backend
        self.config = config
        self.verifier = Verifier(config.secret)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_concurrent_per_service, thread_name_prefix="session"
        )
        self.sessions: OrderedDict[str, SessionRecord] = OrderedDict()
        self.active = 0
        self.started = 0  # sessions handed to the backend since start
        self._lock = threading.Lock()

    # -- operations

    def check_caps(self, session: Session) -> None:
        over = self._over_caps("", session.limits)
        if session.compile is not None:
            over += self._over_caps("compile.", session.compile.limits)
        if over:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "limits above this execution service's caps: " + ", ".join(over),
            )
        if len(session.stdins) > self.config.max_cases:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"{len(session.stdins)} cases, above this execution service's cap of "
                f"{self.config.max_cases}",
            )
        stdin_bytes = sum(len(stdin) for stdin in session.stdins)
        if stdin_bytes > self.config.max_stdin_bytes:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"{stdin_bytes} bytes of stdin, above this execution service's cap of "
                f"{self.config.max_stdin_bytes}",
            )
        if session.policy.network and not self.config.allow_network:
            raise ApiError(HTTPStatus.BAD_REQUEST, "this execution service does not allow network")

    def _over_caps(self, prefix: str, limits: Limits) -> list[str]:
        caps = self.config.caps
        # An optional limit left unset is derived from the others, which are capped.
        return [
            f"{prefix}{name}={asked} (cap {cap})"
            for name in wire.LIMIT_FIELDS
            if (asked := getattr(limits, name)) is not None
            and (cap := getattr(caps, name)) is not None
            and asked > cap
        ]

    def submit(self, session_id: str, body: bytes) -> tuple[HTTPStatus, SessionRecord]:
        try:
            session = wire.session_from_json(session_id, json.loads(body))
        except ValueError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"invalid session: {exc}") from exc
        self.check_caps(session)
        digest = wire.request_digest(body)
        with self._lock:
            self._expire()
            existing = self.sessions.get(session_id)
            if existing is not None:
                if existing.digest != digest:
                    raise ApiError(
                        HTTPStatus.CONFLICT,
                        f"session {session_id} exists with a different request",
                    )
                return HTTPStatus.OK, existing
            if self.active >= self.config.max_concurrent_per_service:
                raise ApiError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"all {self.config.max_concurrent_per_service} sandbox slots are busy",
                    {"Retry-After": "1"},
                )
            record = SessionRecord(session, digest)
            self.sessions[session_id] = record
            self.active += 1
        self.pool.submit(self._execute, record)
        return HTTPStatus.ACCEPTED, record

    def _execute(self, record: SessionRecord) -> None:
        with self._lock:
            self.started += 1
        failure = None
        try:
            self.backend.run_session(record.session, record)
        except Exception as exc:
            # run_session does not raise, but a backend that breaks the contract would
            # otherwise hold its slot and leave the session "running" forever: be sure.
            logger.exception("backend raised on session %s", record.session.handle)
            failure = RunResult.failure(
                ErrorKind.BACKEND_ERROR,
                f"execution service error: {exc}",
                handle=record.session.handle,
            )
        record.end(failure)
        with self._lock:
            self.active -= 1

    def get(self, session_id: str) -> SessionRecord:
        with self._lock:
            self._expire()
            record = self.sessions.get(session_id)
        if record is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no session {session_id}")
        return record

    def cancel(self, session_id: str) -> SessionRecord:
        record = self.get(session_id)
        handle = record.cancel()
        if handle:
            self.backend.cancel(handle)
        return record

    def health(self) -> dict[str, Any]:
        health = self.backend.health()
        with self._lock:
            in_use, started = self.active, self.started
        return {
            "ok": health.ok,
            "detail": health.detail,
            "backend": self.backend.name,
            "backend_version": health.version,
            "version": VERSION,
            "capacity": self.config.max_concurrent_per_service,
            "in_use": in_use,
            "sessions_started": started,
            "caps": dataclasses.asdict(self.config.caps),
            "max_cases": self.config.max_cases,
            "max_stdin_bytes": self.config.max_stdin_bytes,
        }

    def _expire(self) -> None:
        """Forget finished sessions past the retention time or beyond the retention count."""
        now = time.time()
        finished = [key for key, record in self.sessions.items() if record.finished_at is not None]
        excess = len(finished) - self.config.retention_count
        for key in finished:
            finished_at = self.sessions[key].finished_at
            assert finished_at is not None
            if excess > 0 or now - finished_at > self.config.retention_s:
                del self.sessions[key]
                excess -= 1

    # -- HTTP

    def make_server(self, host: str, port: int) -> ThreadingHTTPServer:
        service = self

        class Handler(_Handler):
            pass

        Handler.service = service
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        return server


class _Handler(BaseHTTPRequestHandler):
    service: ExecutionService
    server_version = f"evalplatform-execution-service/{VERSION}"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add about 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body()
            try:
                self.service.verifier.verify(method, self.path, self.headers, body)
            except SigningError as exc:
                raise ApiError(HTTPStatus.UNAUTHORIZED, f"unauthenticated: {exc}") from exc
            status, payload = self._route(method, body)
            self._send(status, payload)
        except ApiError as exc:
            self._send(exc.status, {"error": str(exc)}, exc.headers)
        except Exception as exc:
            logger.exception("error serving %s %s", method, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}"})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from exc
        if length < 0 or length > self.service.config.max_body_bytes:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        return self.rfile.read(length) if length else b""

    def _route(self, method: str, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts == ["v1", "health"] and method == "GET":
            return HTTPStatus.OK, self.service.health()
        if len(parts) == 3 and parts[:2] == ["v1", "sessions"]:
            session_id = parts[2]
            if not wire.SESSION_ID.fullmatch(session_id):
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad session id")
            if method == "PUT":
                status, record = self.service.submit(session_id, body)
                return status, record.summary()
            if method == "GET":
                after, wait_s = _poll_query(url.query)
                record = self.service.get(session_id)
                if wait_s > 0:
                    record.wait(after, min(wait_s, MAX_WAIT_S))
                return HTTPStatus.OK, record.progress(after)
            if method == "DELETE":
                return HTTPStatus.OK, self.service.cancel(session_id).summary()
        raise ApiError(HTTPStatus.NOT_FOUND, f"no route for {method} {url.path}")

    def _send(
        self, status: HTTPStatus, payload: dict[str, Any], headers: Mapping[str, str] = {}
    ) -> None:
        body = wire.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def _poll_query(query: str) -> tuple[int, float]:
    """``after`` (results the client holds) and ``wait`` (seconds) of a poll."""
    values = parse_qs(query)
    after = values.get("after", ["0"])[0]
    if not (after.isascii() and after.isdigit()):
        raise ApiError(HTTPStatus.BAD_REQUEST, "after must be a whole number")
    try:
        wait_s = float(values.get("wait", ["0"])[0])
    except ValueError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "wait must be a number") from exc
    return int(after), wait_s
