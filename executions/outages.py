"""Outages of the database and of Redis (the broker, and the cache beside it): which
exceptions mean that a part cannot be reached, what clients are answered, and how the
platform's own loops ride them out.

The API and the pages answer a request that fails for one of these reasons ``503`` with
``Retry-After`` instead of ``500``: nothing is wrong with the request, and the same request
will work once the part is back. Workers and the recovery lane keep going: a connection an
outage broke is dropped so the next query opens a fresh one (``close_broken_connections``),
and what they would log every second is said once, then at most once per interval
(``RateLimitedLog``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

# How long a client is asked to wait before trying again: about what a database fail-over or
# a restarted Redis takes.
RETRY_AFTER_S = 30

# Requests that write: their changes may already be committed when the broker is asked.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Outage:
    """A part that cannot be reached: ``part`` is ``database`` or ``broker``, ``code`` the
    API's error code, ``message`` the sentence shown to clients."""

    part: str
    code: str
    message: str


DATABASE = Outage(
    "database",
    "database_unavailable",
    "The database is unavailable. Try again shortly.",
)
BROKER = Outage(
    "broker",
    "broker_unavailable",
    "The task broker is unavailable. Try again shortly.",
)


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
    # The driver's own errors, for code that reaches it without Django's wrapper. A driver
    # that was never imported cannot have raised anything.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors += (psycopg.OperationalError, psycopg.InterfaceError)
    return errors


def _broker_errors() -> tuple[type[BaseException], ...]:
    # Every error of the Redis client: refused or timed-out connections, a server still
    # loading, or one refusing writes (out of memory, read-only replica). The platform sends
    # no command of its own that Redis could reject as malformed.
    redis = sys.modules.get("redis")
    return (redis.exceptions.RedisError,) if redis is not None else ()


def outage_of(exc: BaseException | None) -> Outage | None:
    """The outage ``exc`` is a symptom of, or None. Follows explicit causes (``raise ... from``),
    as Django's database wrapper and code that translates errors leave them."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _database_errors()):
            return DATABASE
        if isinstance(exc, _broker_errors()):
            return BROKER
        exc = exc.__cause__
    return None


def outage_to_answer(exc: BaseException, method: str) -> Outage | None:
    """The outage to answer a request (HTTP ``method``) that raised ``exc`` with, ``503`` and
    ``Retry-After``, or None.

    A broker error in a request that writes is not one: tasks are sent once the request's
    transaction is committed, so what the request stored is kept, and a ``503`` would ask the
    client to send it again.
    """
    outage = outage_of(exc)
    if outage is BROKER and method.upper() in WRITE_METHODS:
        return None
    return outage


def log_answered(outage: Outage, exc: BaseException, method: str, path: str) -> None:
    """One log line for a request answered ``503`` because of ``outage``; the logging filter
    (``evalplatform.logs``) lets the first of a run of them through, then one a while."""
    logger.error(
        "%s unavailable: answered 503 to %s %s",
        outage.part.capitalize(),
        method,
        path,
        exc_info=exc,
        extra={"outage": outage.part, "status_code": 503},
    )


class RateLimitedLog:
    """``warning``/``error`` through ``logger`` at most once per ``every_s`` seconds."""

    def __init__(self, logger: logging.Logger, *, every_s: float) -> None:
        self.logger = logger
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._held = 0

    def warning(self, message: str, *args: Any) -> None:
        self._log(logging.WARNING, message, args)

    def error(self, message: str, *args: Any) -> None:
        self._log(logging.ERROR, message, args)

    def _log(self, level: int, message: str, args: tuple[Any, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every_s:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        if held:
            message += f" ({held} more like this in the last {self.every_s:g} s)"
        self.logger.log(level, message, *args)


def close_broken_connections() -> None:
    """Close each database connection an error left unusable (outside a transaction, which
    its owner ends): the next query reconnects."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            try:
                connection.close_if_unusable_or_obsolete()
            except Exception:
                connection.connection = None  # closing a dead socket failed: forget it
