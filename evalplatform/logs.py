"""Log lines an operator can act on: JSON lines (``LOG_FORMAT=json``), and a filter that keeps
an outage from flooding the log.

Both are wired to the console handler in ``evalplatform.settings.LOGGING``. The filter sits on
the handler rather than on loggers because a logger's filters see only the records logged on
that very logger, not those of its children (``executions.services.running``) nor of
django-q2's processes, which log on ``django-q``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from executions.outages import outage_of

# The attributes every LogRecord has; any other one came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, every field given with ``extra=`` (``execution_id``, ...), and
    ``exception`` (the formatted traceback) when there is one. A value JSON cannot hold is
    written as its ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def _exception_of(record: logging.LogRecord) -> BaseException | None:
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    # django-q2 logs some failures as the exception itself: ``logger.error(e)``.
    return record.msg if isinstance(record.msg, BaseException) else None


class OutageRateLimit(logging.Filter):
    """Let the first record about an unreachable database or broker through, then at most
    one a ``interval_s`` of the same kind, which says how many were left out meanwhile.

    A kind is the logger, the level, the message's template and the exception's class, so
    django-q2's loop logging a refused Redis connection every half second gives one line, and
    a different failure still gets its own. Records about anything else always pass.
    ``interval_s`` 0 turns the filter off.
    """

    def __init__(
        self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        # Per kind: when one was last let through, and how many were left out since.
        self._kinds: dict[tuple[object, ...], tuple[float | None, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval_s <= 0:
            return True
        exc = _exception_of(record)
        if outage_of(exc) is None:
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__qualname__
        kind = (record.name, record.levelno, template, type(exc).__qualname__)
        now = self.clock()
        with self._lock:
            last_passed, suppressed = self._kinds.get(kind, (None, 0))
            if last_passed is not None and now - last_passed < self.interval_s:
                self._kinds[kind] = (last_passed, suppressed + 1)
                return False
            self._kinds[kind] = (now, 0)
        if suppressed and last_passed is not None:
            record.msg = (
                f"{record.getMessage()} ({suppressed} more like this in the last "
                f"{now - last_passed:.0f} s were not logged)"
            )
            record.args = ()
            record.__dict__["suppressed"] = suppressed
        return True
