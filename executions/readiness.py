"""Whether the platform can take work now, for ``/readyz``: the database, the broker and the
execution backend, each probed apart, in parallel, each within its own time limit.

Only the database decides readiness. Without it nothing can be stored or read, so the
platform is *unready*. Without the broker or the execution backend a submission is still
stored and waits in the queue until they are back, so the platform is *degraded*: ready,
with the part that is missing named.

The answer is public (it is served on any host, without a login), so each check says only
whether the part answered and, if not, the kind of failure; the full error is logged once
when a part goes away, and a line is logged when it is back.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass

from django.conf import settings
from django.db import connections

from executions.backends import get_backend

logger = logging.getLogger(__name__)

# Each probe's limit. An orchestrator's probe usually gives up after a few seconds; every
# probe here runs at once, so the whole answer takes at most about this long.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    """One part: whether it answered, and a short public description."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    database: Check
    broker: Check
    backend: Check

    @property
    def ready(self) -> bool:
        return self.database.ok

    @property
    def status(self) -> str:
        """``ready``, ``degraded`` (ready, but the broker or the backend is missing) or
        ``unready``."""
        if not self.ready:
            return "unready"
        return "ready" if self.broker.ok and self.backend.ok else "degraded"

    def as_dict(self) -> dict[str, object]:
        checks = {"database": self.database, "broker": self.broker, "backend": self.backend}
        return {
            "status": self.status,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }


class Unhealthy(Exception):
    """A part answered, but says it cannot work: ``public`` is shown, the message logged."""

    def __init__(self, public: str, logged: str) -> None:
        super().__init__(logged)
        self.public = public


def _probe_database(timeout_s: float) -> str:
    # A thread's own connection, closed after: the request's connection is left as it is.
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connections.close_all()
    return "answered"


def redis_url() -> str | None:
    """The Redis broker's URL, or None when the broker is the database (django-q2's ORM)."""
    url = settings.Q_CLUSTER.get("redis")
    return url if isinstance(url, str) else None


def _probe_redis(url: str, timeout_s: float) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()
    return "Redis answered"


def _probe_backend(timeout_s: float) -> str:
    backend = get_backend()
    health = backend.health()
    if not health.ok:
        raise Unhealthy(f"{backend.name}: unhealthy", f"{backend.name}: {health.detail}")
    return f"{backend.name}: healthy"


def readiness(timeout_s: float = PROBE_TIMEOUT_S) -> Readiness:
    """Probe every part at once; a probe that raises or takes longer than ``timeout_s`` is a
    failed check. Never raises, never waits much longer than ``timeout_s``: a probe that
    overruns is left to finish in its thread, which is abandoned, not joined."""
    probes: dict[str, Callable[[float], str]] = {
        "database": _probe_database,
        "backend": _probe_backend,
    }
    url = redis_url()
    if url is not None:
        probes["broker"] = functools.partial(_probe_redis, url)
    checks = _run(probes, timeout_s)
    if "broker" not in checks:
        # The ORM broker is the database: it answers exactly when the database does.
        database = checks["database"]
        detail = "the database (ORM broker)" + ("" if database.ok else ": unreachable")
        checks["broker"] = Check(ok=database.ok, detail=detail)
    return Readiness(**checks)


def _run(probes: dict[str, Callable[[float], str]], timeout_s: float) -> dict[str, Check]:
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="readiness")
    futures = {name: pool.submit(probe, timeout_s) for name, probe in probes.items()}
    pool.shutdown(wait=False)
    deadline = time.monotonic() + timeout_s
    checks: dict[str, Check] = {}
    for name, future in futures.items():
        try:
            detail = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FuturesTimeout:
            checks[name] = _failed(name, f"no answer within {timeout_s:g} s", None)
        except Unhealthy as exc:
            checks[name] = _failed(name, exc.public, exc)
        except Exception as exc:
            checks[name] = _failed(name, f"failed ({type(exc).__name__})", exc)
        else:
            checks[name] = Check(ok=True, detail=detail)
            _note(name, ok=True, reason=detail)
    return checks


def _failed(name: str, detail: str, exc: BaseException | None) -> Check:
    _note(name, ok=False, reason=detail, exc=exc)
    return Check(ok=False, detail=detail)


# Whether each part answered the last probe in this process, to log only the changes.
_last_ok: dict[str, bool] = {}
_last_ok_lock = threading.Lock()


def _note(name: str, *, ok: bool, reason: str, exc: BaseException | None = None) -> None:
    with _last_ok_lock:
        changed = _last_ok.get(name, True) != ok
        _last_ok[name] = ok
    if not changed:
        return
    if ok:
        logger.info("Readiness: the %s is back: %s", name, reason, extra={"part": name})
    elif isinstance(exc, Unhealthy):
        logger.warning("Readiness: the %s is down: %s", name, exc, extra={"part": name})
    else:
        logger.warning(
            "Readiness: the %s is down: %s", name, reason, exc_info=exc, extra={"part": name}
        )
