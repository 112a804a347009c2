"""Riding out an outage of the database or the broker: log lines that an outage would repeat
every second, said once and then at most once per interval; and connections it broke, dropped
so the next query opens a fresh one."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import connections


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
