"""The execution service's HTTP API (``/v1/``) over a local execution backend.

* ``PUT /v1/runs/{run_id}``: submit a run (JSON, see ``wire``). Idempotent: the same body
  again returns the existing run (200); a different body under the same id is 409. A new run
  is 202. Limits above the service's caps are 400; at capacity 429 with ``Retry-After``.
* ``GET /v1/runs/{run_id}[?wait=S]``: status (``queued``, ``running``, ``done``) and, when
  done, the result (bytes base64-encoded). ``wait`` long-polls up to ``MAX_WAIT_S``.
* ``POST /v1/runs/{run_id}/cancel``: stop the run's sandbox.
* ``GET /v1/health``: backend health, capacity in use and total, service version.

Every request must be signed (``sandbox.signing``); anything else is 401 before the
body is parsed or the backend is touched. Finished runs are kept for ``retention_s`` seconds
and at most ``retention_count`` of them, then forgotten.
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
from sandbox.contract import ErrorKind, ExecutionBackend, RunRequest, RunResult
from sandbox.policy import Limits
from sandbox.signing import SigningError, Verifier

logger = logging.getLogger("execution_service")

MAX_WAIT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """What the service accepts. ``caps`` bound every limit of every request it runs;
    ``max_concurrent_per_service`` runs at once, more are refused (429)."""

    secret: str
    caps: Limits
    max_concurrent_per_service: int = 4
    max_body_bytes: int = 16 * 1024 * 1024
    retention_s: float = 600.0
    retention_count: int = 1000
    allow_network: bool = False


@dataclasses.dataclass
class Run:
    request: RunRequest
    digest: str
    status: str = "queued"
    result: RunResult | None = None
    submitted: float = dataclasses.field(default_factory=time.time)
    finished_at: float | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run_id": self.request.handle, "status": self.status}
        if self.result is not None:
            data["result"] = wire.result_to_json(self.result)
        return data


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers)


class ExecutionService:
    """Runs, their results and the pool that executes them; thread-safe."""

    def __init__(self, backend: ExecutionBackend, config: ServiceConfig) -> None:
        self.backend = backend
        self.config = config
        self.verifier = Verifier(config.secret)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_concurrent_per_service, thread_name_prefix="run"
        )
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.active = 0
        self.started = 0  # runs handed to the backend since start
        self._lock = threading.Lock()

    # -- operations

    def check_caps(self, request: RunRequest) -> None:
        asked = {name: getattr(request.limits, name) for name in wire.LIMIT_FIELDS}
        caps = {name: getattr(self.config.caps, name) for name in wire.LIMIT_FIELDS}
        # An optional limit left unset is derived from the others, which are capped.
        over = [
            f"{name}={asked[name]} (cap {caps[name]})"
            for name in wire.LIMIT_FIELDS
            if asked[name] is not None and caps[name] is not None and asked[name] > caps[name]
        ]
        if over:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "limits above this execution service's caps: " + ", ".join(over),
            )
        if request.policy.network and not self.config.allow_network:
            raise ApiError(HTTPStatus.BAD_REQUEST, "this execution service does not allow network")

    def submit(self, run_id: str, body: bytes) -> tuple[HTTPStatus, Run]:
        try:
            request = wire.request_from_json(run_id, json.loads(body))
        except (ValueError, wire.WireError) as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"invalid run: {exc}") from exc
        self.check_caps(request)
        digest = wire.request_digest(body)
        with self._lock:
            self._expire()
            existing = self.runs.get(run_id)
            if existing is not None:
                if existing.digest != digest:
                    raise ApiError(
                        HTTPStatus.CONFLICT, f"run {run_id} exists with a different request"
                    )
                return HTTPStatus.OK, existing
            if self.active >= self.config.max_concurrent_per_service:
                raise ApiError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"all {self.config.max_concurrent_per_service} sandbox slots are busy",
                    {"Retry-After": "1"},
                )
            run = Run(request=request, digest=digest)
            self.runs[run_id] = run
            self.active += 1
        self.pool.submit(self._execute, run)
        return HTTPStatus.ACCEPTED, run

    def _execute(self, run: Run) -> None:
        run.status = "running"
        with self._lock:
            self.started += 1
        try:
            result = self.backend.run(run.request)
        except Exception as exc:
            # ExecutionBackend.run does not raise, but a backend that overrides it might, and
            # then the run would hold its slot and stay "running" forever: be sure.
            logger.exception("backend raised on run %s", run.request.handle)
            result = RunResult.failure(
                ErrorKind.BACKEND_ERROR,
                f"execution service error: {exc}",
                handle=run.request.handle,
            )
        with self._lock:
            run.result = result
            run.status = "done"
            run.finished_at = time.time()
            self.active -= 1
        run.done.set()

    def get(self, run_id: str, wait_s: float = 0.0) -> Run:
        with self._lock:
            self._expire()
            run = self.runs.get(run_id)
        if run is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no run {run_id}")
        if wait_s > 0:
            run.done.wait(min(wait_s, MAX_WAIT_S))
        return run

    def cancel(self, run_id: str) -> Run:
        run = self.get(run_id)
        if run.status != "done":
            self.backend.cancel(run.request.handle)
        return run

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
            "runs_started": started,
            "caps": dataclasses.asdict(self.config.caps),
        }

    def _expire(self) -> None:
        """Forget finished runs past the retention time or beyond the retention count."""
        now = time.time()
        finished = [key for key, run in self.runs.items() if run.finished_at is not None]
        excess = len(finished) - self.config.retention_count
        for key in finished:
            run = self.runs[key]
            assert run.finished_at is not None
            if excess > 0 or now - run.finished_at > self.config.retention_s:
                del self.runs[key]
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
        if len(parts) >= 3 and parts[:2] == ["v1", "runs"]:
            run_id = parts[2]
            if not wire.RUN_ID.fullmatch(run_id):
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad run id")
            if len(parts) == 3 and method == "PUT":
                status, run = self.service.submit(run_id, body)
                return status, run.to_json()
            if len(parts) == 3 and method == "GET":
                query = parse_qs(url.query)
                try:
                    wait_s = float(query.get("wait", ["0"])[0])
                except ValueError as exc:
                    raise ApiError(HTTPStatus.BAD_REQUEST, "wait must be a number") from exc
                return HTTPStatus.OK, self.service.get(run_id, wait_s).to_json()
            if parts[3:] == ["cancel"] and method == "POST":
                return HTTPStatus.OK, self.service.cancel(run_id).to_json()
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
