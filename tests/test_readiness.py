"""``/readyz``: the database decides readiness; the broker (a throw-away Redis the test stops)
and the execution backend make the platform degraded, not unready; no probe can hang it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.test import Client

from executions.backends.fake import FakeBackend
from executions.readiness import readiness
from sandbox.contract import Health
from tests.stoppable_parts import RedisServer, database_unreachable, redis_server

pytestmark = pytest.mark.django_db


class HangingBackend(FakeBackend):
    """A backend whose engine never answers a health check (until the test ends)."""

    released: ClassVar[threading.Event] = threading.Event()

    def health(self) -> Health:
        self.released.wait(timeout=30)
        return Health(ok=True, detail="late")


@pytest.fixture
def redis_broker(settings: Any, tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        settings.Q_CLUSTER = {
            key: value for key, value in settings.Q_CLUSTER.items() if key != "orm"
        } | {"redis": server.url}
        yield server


@pytest.mark.real_service
def test_all_parts_answering_is_ready(client: Client, redis_broker: RedisServer) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True, "detail": "answered"},
            "broker": {"ok": True, "detail": "Redis answered"},
            "backend": {"ok": True, "detail": "fake: healthy"},
        },
    }


@pytest.mark.real_service
def test_redis_stopped_is_degraded_not_unready_and_its_return_is_logged(
    client: Client, redis_broker: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.get("/readyz").json()["status"] == "ready"
    caplog.clear()
    redis_broker.stop()
    with caplog.at_level(logging.INFO, logger="executions.readiness"):
        for _ in range(3):
            response = client.get("/readyz")
            assert response.status_code == 200
            assert response.json()["status"] == "degraded"
            assert response.json()["checks"]["broker"] == {
                "ok": False,
                "detail": "failed (ConnectionError)",
            }
            assert response.json()["checks"]["database"]["ok"] is True
        redis_broker.start()
        assert client.get("/readyz").json()["status"] == "ready"
    lines = [r.getMessage() for r in caplog.records if r.name == "executions.readiness"]
    # Once when it goes, once when it is back; not at every probe.
    assert lines == [
        "Readiness: the broker is down: failed (ConnectionError)",
        "Readiness: the broker is back: Redis answered",
    ]


def test_the_database_out_of_reach_is_unready(client: Client) -> None:
    with database_unreachable():
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    checks = response.json()["checks"]
    assert response.json()["status"] == "unready"
    assert checks["database"] == {"ok": False, "detail": "failed (OperationalError)"}
    # No address, port or message of the database in a public answer.
    assert "127.0.0.1" not in response.content.decode()
    assert checks["backend"]["ok"] is True


def test_the_orm_broker_is_the_database(settings: Any) -> None:
    settings.Q_CLUSTER = {
        key: value for key, value in settings.Q_CLUSTER.items() if key != "redis"
    } | {"orm": "default"}
    assert readiness().broker.ok is True
    assert readiness().broker.detail == "the database (ORM broker)"
    with database_unreachable():
        report = readiness()
    assert not report.broker.ok
    assert report.broker.detail == "the database (ORM broker): unreachable"


def test_an_unhealthy_backend_is_degraded_and_named(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert readiness().backend.ok is True
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "disabled"}
    with caplog.at_level(logging.WARNING, logger="executions.readiness"):
        report = readiness()
    assert report.ready and report.status == "degraded"
    assert report.backend.detail == "disabled: unhealthy"
    # The backend's own explanation is logged, not shown.
    (line,) = [r.getMessage() for r in caplog.records if "backend" in r.getMessage()]
    assert line.startswith("Readiness: the backend is down: disabled: Execution is disabled")


def test_a_probe_that_hangs_is_a_failed_check_within_the_time_limit(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "tests.test_readiness.HangingBackend"}
    HangingBackend.released.clear()
    try:
        started = time.monotonic()
        report = readiness(timeout_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        HangingBackend.released.set()
    assert elapsed < 2
    assert report.backend.ok is False
    assert report.backend.detail == "no answer within 0.5 s"
    assert report.database.ok and report.status == "degraded"
