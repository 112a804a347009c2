"""An outage drill on the production shape: gunicorn and a qcluster on a PostgreSQL cluster and
a Redis of their own (``faults.platform``, as the fault suite starts them), which the test
stops and starts again.

With Redis stopped, reads answer as usual, ``/readyz`` says *degraded* and the cluster's
half-second loop logs the refused connection once in a while, not at every turn. With
PostgreSQL stopped, the API answers 503 with ``Retry-After``, ``/readyz`` 503, ``/healthz``
still 200. Each comes back on its own when its part does. Logs are JSON lines throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from faults.platform import Platform, running_platform
from tests.stoppable_parts import PostgresCluster, RedisServer, postgres_cluster, redis_server

pytestmark = [pytest.mark.slow, pytest.mark.real_service]

# Short, so that the drill sees a run of errors summed up within seconds.
REPEAT_INTERVAL_S = 3


@dataclass
class Drill:
    platform: Platform
    database: PostgresCluster
    broker: RedisServer

    @property
    def url(self) -> str:
        return self.platform.url

    @property
    def web_log(self) -> Path:
        return self.platform.web_log

    @property
    def cluster_log(self) -> Path:
        return self.platform.cluster_log

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers=self.platform.auth, timeout=15)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.platform.auth, timeout=15)


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log (gunicorn's own lines are not the platform's)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def answers(call: Callable[[], requests.Response], status: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return call().status_code == status
        except requests.RequestException:
            return False

    return check


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    directory = tmp_path_factory.mktemp("outage-drill")
    with postgres_cluster() as database, redis_server(directory) as broker:
        drilled = Platform(
            directory,
            database_url=database.url,
            redis_url=broker.url,
            backend="fake",
            web_workers=1,
            environ={"LOG_FORMAT": "json", "LOG_REPEAT_INTERVAL_S": str(REPEAT_INTERVAL_S)},
        )
        with running_platform(drilled):
            yield Drill(drilled, database, broker)


def test_with_redis_stopped_reads_answer_and_readiness_is_degraded(platform: Drill) -> None:
    eventually(
        lambda: "running." in platform.cluster_log.read_text(),
        f"the cluster did not start: {platform.cluster_log.read_text()}",
        timeout_s=60,
    )
    assert platform.get("/readyz").json()["status"] == "ready"
    created = platform.post("/api/v1/evaluations/", {"runtime": "python-3.11", "source": "1"})
    assert created.status_code == 201, created.text
    evaluation = created.json()["id"]

    platform.broker.stop()
    stopped_at = time.monotonic()
    try:
        for path in ("/api/v1/evaluations/", f"/api/v1/evaluations/{evaluation}/"):
            response = platform.get(path)
            assert response.status_code == 200, (path, response.text)
        ready = platform.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["broker"]["ok"] is False
        assert platform.get("/healthz").status_code == 200
        # Long enough for django-q2's half-second loop to fail about 15 times.
        time.sleep(max(0.0, 2.5 * REPEAT_INTERVAL_S - (time.monotonic() - stopped_at)))
    finally:
        platform.broker.start()
    outage_s = time.monotonic() - stopped_at
    eventually(lambda: platform.get("/readyz").json()["status"] == "ready", "Redis came back")

    refused = [
        line
        for line in log_lines(platform.cluster_log)
        if line["logger"] == "django-q" and "Connection refused" in line["message"]
    ]
    assert refused, platform.cluster_log.read_text()
    # Each kind at most once per interval (and the first), instead of twice a second.
    kinds = {(line["level"], line["message"].split(" (")[0]) for line in refused}
    assert len(refused) <= len(kinds) * (outage_s // REPEAT_INTERVAL_S + 1)
    assert any(line.get("suppressed", 0) > 0 for line in refused), refused
    web = log_lines(platform.web_log)
    throttle = [line for line in web if line["logger"] == "executions.api.throttling"]
    assert len(throttle) == 1 and throttle[0]["level"] == "WARNING"
    assert "ConnectionError" in throttle[0]["exception"]


def test_with_postgresql_stopped_the_api_answers_503_and_recovers(platform: Drill) -> None:
    assert platform.get("/api/v1/evaluations/").status_code == 200
    platform.database.stop()
    try:
        for response in (
            platform.get("/api/v1/evaluations/"),
            platform.get("/api/v1/evaluations/1/"),
            platform.post("/api/v1/evaluations/", {"runtime": "python-3.11", "source": "1"}),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "30"
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.json()["error"]["fields"] == {}
        ready = platform.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "30"
        assert ready.json()["status"] == "unready"
        assert ready.json()["checks"]["database"]["ok"] is False
        assert platform.get("/healthz").status_code == 200
    finally:
        platform.database.start()
    eventually(
        answers(lambda: platform.get("/api/v1/evaluations/"), 200),
        "the API did not recover after PostgreSQL came back",
    )
    assert platform.get("/readyz").json()["status"] in {"ready", "degraded"}

    answered = [
        line for line in log_lines(platform.web_log) if line["logger"] == "executions.outages"
    ]
    # Three requests within the interval: one line, with what failed.
    assert len(answered) == 1, answered
    assert answered[0]["level"] == "ERROR" and answered[0]["outage"] == "database"
    assert "OperationalError" in answered[0]["exception"]
    assert not [line for line in log_lines(platform.web_log) if line["logger"] == "django.request"]
