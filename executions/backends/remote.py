"""Run sandboxes on remote execution services; the only module that talks to them.

The platform holds no Docker client and no socket: every run is a signed HTTP call to one of
the services in ``urls`` (``python -m execution_service`` on the execution nodes). A run goes:

1. pick the service with the most free capacity from its last ``/v1/health`` answer (cached
   for ``health_ttl_s``; unreachable services go last);
2. ``PUT /v1/runs/{handle}`` (idempotent on the service: a retry returns the same run); on a
   connection failure, a 429 or a 5xx try the next service, within ``failover_budget_s``;
3. long-poll ``GET /v1/runs/{handle}?wait=...`` until the run is done, at most the wall time
   plus ``grace_s``; past that the run is cancelled and reported as a backend error.

A service that stops answering mid-run ends the run with ``UNAVAILABLE`` and a message naming
it (retried for ``poll_retry_s`` first, to ride out a blip). ``run`` never raises for a
failure of the infrastructure. All HTTP goes through ``requests`` here; signing is
``sandbox.signing``, shared with the service.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from sandbox import signing, wire
from sandbox.contract import (
    ErrorKind,
    ExecutionBackend,
    Health,
    Isolation,
    RunRequest,
    RunResult,
)
from sandbox.options import OptionError, names


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
    # Seconds a run may take beyond its wall time before it is cancelled.
    grace_s: float = 15.0
    # Seconds of one long poll.
    poll_wait_s: float = 5.0
    # Seconds a service may stop answering mid-run before the run is given up.
    poll_retry_s: float = 2.0
    # Seconds to find a service that takes the run.
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
    """Sends each run to a remote execution service. Options: ``RemoteOptions``."""

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
        try:
            base = self._submit(request)
            return self._await(base, request)
        except ServiceError as exc:
            return RunResult.failure(exc.kind, str(exc), handle=request.handle)

    def _submit(self, request: RunRequest) -> str:
        """PUT the run on a service that takes it; return that service's URL."""
        payload = wire.request_to_json(request)
        path = f"/v1/runs/{request.handle}"
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
                    f"Execution service {base} refused the run ({response.status_code}): {message}",
                    retry_elsewhere=False,
                    kind=ErrorKind.BACKEND_ERROR,
                )
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise ServiceError(
            "No execution service took the run within "
            f"{self.options.failover_budget_s:g} s: " + "; ".join(errors[-len(self.urls) :]),
            retry_elsewhere=True,
            kind=ErrorKind.UNAVAILABLE,
        )

    def _await(self, base: str, request: RunRequest) -> RunResult:
        path = f"/v1/runs/{request.handle}"
        deadline = time.monotonic() + request.limits.wall_time_s + self.options.grace_s
        lost_since: float | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._cancel_on(base, request.handle)
                raise ServiceError(
                    f"Execution service {base} did not finish run {request.handle} within its "
                    f"wall time plus {self.options.grace_s:g} s; it was cancelled.",
                    retry_elsewhere=False,
                    kind=ErrorKind.BACKEND_ERROR,
                )
            wait = max(0.0, min(self.options.poll_wait_s, remaining))
            try:
                response = self._call(
                    base,
                    "GET",
                    f"{path}?wait={wait:.2f}",
                    timeout_s=wait + self.options.timeout_s,
                    max_bytes=result_answer_bytes(request.limits.output_bytes),
                )
            except requests.RequestException as exc:
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since >= self.options.poll_retry_s:
                    raise ServiceError(
                        f"Execution service {base} stopped answering during run "
                        f"{request.handle}: {type(exc).__name__}: {exc}",
                        retry_elsewhere=False,
                        kind=ErrorKind.UNAVAILABLE,
                    ) from exc
                time.sleep(0.1)
                continue
            lost_since = None
            if response.status_code != 200:
                raise ServiceError(
                    f"Execution service {base} lost run {request.handle} "
                    f"({response.status_code}): {_error_text(response)}",
                    retry_elsewhere=False,
                    kind=ErrorKind.UNAVAILABLE
                    if response.status_code in (404, 503)
                    else ErrorKind.BACKEND_ERROR,
                )
            data = response.json()
            if data.get("status") == "done":
                return recapped(wire.result_from_json(data.get("result")), request)

    def _cancel_on(self, base: str, handle: str) -> bool:
        try:
            response = self._call(base, "POST", f"/v1/runs/{handle}/cancel")
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


def recapped(result: RunResult, request: RunRequest) -> RunResult:
    """``result`` held to the caps the platform asked for: a compromised node cannot make the
    platform store more output than the run allowed, nor a longer message."""
    cap = request.limits.output_bytes
    if len(result.stdout) > cap:
        result.stdout, result.stdout_truncated = result.stdout[:cap], True
    if len(result.stderr) > cap:
        result.stderr, result.stderr_truncated = result.stderr[:cap], True
    result.error_message = result.error_message[:ERROR_MESSAGE_CHARS]
    result.handle = request.handle
    return result


def _error_text(response: _Answer) -> str:
    try:
        return str(response.json().get("error", ""))[:500]
    except (ValueError, AttributeError):
        return response.body[:200].decode(errors="replace")


__all__: Sequence[str] = ("RemoteBackend",)
