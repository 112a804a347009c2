"""JSON log lines and the filter that logs a run of outage errors once in a while."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.db import IntegrityError

from evalplatform.logs import JsonFormatter, OutageRateLimit
from tests.test_docs import free_port

ROOT = Path(__file__).resolve().parent.parent


def refused_redis() -> redis.RedisError:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        client.ping()
    except redis.RedisError as exc:
        return exc
    raise AssertionError("nothing should listen there")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Captured:
    """A logger of its own whose handler keeps, in ``kept``, what passes ``rate_limit``."""

    logger: logging.Logger
    kept: list[logging.LogRecord]
    rate_limit: OutageRateLimit
    clock: Clock


@pytest.fixture
def captured() -> Iterator[Captured]:
    clock = Clock()
    rate_limit = OutageRateLimit(interval_s=60, clock=clock)
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    handler.addFilter(rate_limit)
    logger = logging.getLogger("tests.logs.captured")
    logger.addHandler(handler)
    logger.propagate = False
    yield Captured(logger, kept, rate_limit, clock)
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_json_line_has_time_level_logger_message_extra_fields_and_the_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "Execution %s reaped: %s",
            42,
            "no heartbeat",
            extra={"execution_id": 42, "path": Path("/srv/x")},
        )
        try:
            raise ValueError("broken")
        except ValueError:
            logger.exception("It failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING"
    assert first["logger"] == "tests.logs.json"
    assert first["message"] == "Execution 42 reaped: no heartbeat"
    assert first["execution_id"] == 42
    assert first["path"] == "/srv/x"  # not JSON: written as its str()
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert "exception" not in first and "args" not in first and "msg" not in first
    assert second["message"] == "It failed" and second["level"] == "ERROR"
    assert second["exception"].startswith("Traceback")
    assert "ValueError: broken" in second["exception"]


def test_a_run_of_outage_errors_is_logged_once_a_while_with_a_count(captured: Captured) -> None:
    logger, kept, clock = captured.logger, captured.kept, captured.clock
    error = refused_redis()
    for _ in range(5):
        logger.error("Could not count: %s", "rates", exc_info=error)
        clock.now += 1
    assert len(kept) == 1
    assert kept[0].getMessage() == "Could not count: rates"
    clock.now += 60
    logger.error("Could not count: %s", "rates", exc_info=error)
    assert len(kept) == 2
    assert kept[1].getMessage() == (
        "Could not count: rates (4 more like this in the last 65 s were not logged)"
    )
    assert kept[1].suppressed == 4  # type: ignore[attr-defined]
    assert kept[1].exc_info is not None


def test_django_q_style_exception_messages_are_limited_per_kind(captured: Captured) -> None:
    logger, kept, clock = captured.logger, captured.kept, captured.clock
    for _ in range(10):  # django-q2's guard loop: logger.error(e), every half second
        logger.error(refused_redis())
        clock.now += 0.5
    assert len(kept) == 1 and "Connection refused" in kept[0].getMessage()
    # Another kind of line, or another level, has its own count.
    logger.error("Failed to pull task from broker", exc_info=refused_redis())
    logger.critical(refused_redis())
    assert len(kept) == 3


def test_other_records_always_pass(captured: Captured) -> None:
    logger, kept = captured.logger, captured.kept
    for _ in range(3):
        logger.error("Duplicate", exc_info=IntegrityError("duplicate key"))
        logger.warning("Execution %s failed", 7)
    assert len(kept) == 6


def test_an_interval_of_zero_turns_the_filter_off(captured: Captured) -> None:
    logger, kept = captured.logger, captured.kept
    captured.rate_limit.interval_s = 0
    for _ in range(3):
        logger.error(refused_redis())
    assert len(kept) == 3


def run_with_settings(code: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """``code`` run after ``django.setup()`` in a fresh process with ``environ``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    return subprocess.run(
        [sys.executable, "-c", "import django\ndjango.setup()\n" + textwrap.dedent(code)],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "evalplatform.settings", "DEBUG": "1", **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_log_format_json_makes_every_line_json_and_the_filter_applies_to_django_q() -> None:
    code = f"""
        import logging
        import redis

        logging.getLogger("executions.services.running").warning(
            "Execution %s failed inside the platform", 9, extra={{"execution_id": 9}}
        )
        client = redis.Redis.from_url("redis://127.0.0.1:{free_port()}/0")
        for _ in range(20):  # as django-q2's guard loop does, with Redis gone
            try:
                client.ping()
            except redis.RedisError as exc:
                logging.getLogger("django-q").error(exc)
    """
    result = run_with_settings(code, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    (execution,) = [line for line in lines if line["logger"] == "executions.services.running"]
    assert execution["execution_id"] == 9
    assert execution["message"] == "Execution 9 failed inside the platform"
    refused = [line for line in lines if line["logger"] == "django-q"]
    assert len(refused) == 1 and "Connection refused" in refused[0]["message"]


def test_a_bad_log_format_or_interval_stops_start_up_naming_the_variable() -> None:
    result = run_with_settings("pass", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json, got 'xml'" in result.stderr
    result = run_with_settings("pass", LOG_REPEAT_INTERVAL_S="soon")
    assert result.returncode != 0
    assert "LOG_REPEAT_INTERVAL_S must be an integer" in result.stderr
