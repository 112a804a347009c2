"""Which exceptions mean that the database or Redis cannot be reached: each one here is raised
for real, by a connection to a port where nothing listens or to a server that never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis
from django.db import IntegrityError, connections

from executions.outages import BROKER, DATABASE, outage_of, outage_to_answer
from tests.stoppable_parts import database_unreachable
from tests.test_docs import free_port


def raised(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError(f"{call} did not raise")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def redis_refused() -> BaseException:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    return raised(client.ping)


@pytest.mark.django_db
def test_an_unreachable_database_is_a_database_outage_wrapped_or_not() -> None:
    with database_unreachable():
        error = raised(connections["default"].ensure_connection)
    assert type(error).__module__ == "django.db.utils"
    assert outage_of(error) is DATABASE
    # The driver's own error, as code below Django's wrapper sees it.
    assert type(error.__cause__).__module__.startswith("psycopg")
    assert outage_of(error.__cause__) is DATABASE


def test_a_refused_or_hung_redis_is_a_broker_outage(silent_port: int) -> None:
    assert outage_of(redis_refused()) is BROKER
    hung = redis.Redis.from_url(
        f"redis://127.0.0.1:{silent_port}/0", socket_connect_timeout=1, socket_timeout=0.2
    )
    timed_out = raised(hung.ping)
    assert isinstance(timed_out, redis.TimeoutError)
    assert outage_of(timed_out) is BROKER


def test_an_outage_is_found_through_an_explicit_cause_only() -> None:
    cause = redis_refused()
    try:
        raise RuntimeError("could not count") from cause
    except RuntimeError as exc:
        assert outage_of(exc) is BROKER
    try:
        try:
            raise cause
        except redis.RedisError:
            raise ValueError("a bug while handling it") from None
    except ValueError as exc:
        assert outage_of(exc) is None


@pytest.mark.parametrize("error", [IntegrityError("duplicate key"), ValueError("bad"), None])
def test_other_errors_are_not_outages(error: BaseException | None) -> None:
    assert outage_of(error) is None


def test_a_broker_error_in_a_request_that_writes_is_not_answered_as_an_outage() -> None:
    broker_error = redis_refused()
    assert outage_to_answer(broker_error, "GET") is BROKER
    assert outage_to_answer(broker_error, "HEAD") is BROKER
    # The request's transaction was committed before the broker was asked.
    assert outage_to_answer(broker_error, "POST") is None
    assert outage_to_answer(broker_error, "delete") is None
    database_error = IntegrityError("not an outage")
    assert outage_to_answer(database_error, "GET") is None


@pytest.mark.django_db
def test_a_database_error_is_answered_for_every_method() -> None:
    with database_unreachable():
        error = raised(connections["default"].ensure_connection)
    for method in ("GET", "POST", "PATCH", "DELETE"):
        assert outage_to_answer(error, method) is DATABASE
