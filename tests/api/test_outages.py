"""The API through outages: the database out of reach answers 503 with ``Retry-After`` in the
error shape; with Redis stopped, reads answer as usual and request rates fail open."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.cache import caches
from rest_framework.test import APIClient, APIRequestFactory

from executions.api import throttling
from executions.api.errors import exception_handler
from executions.api.throttling import UserThrottle
from executions.models import Evaluation, UserQuota
from tests.api.conftest import submission
from tests.stoppable_parts import RedisServer, database_unreachable, redis_server

pytestmark = pytest.mark.django_db


def assert_outage(response: Any, code: str) -> None:
    assert response.status_code == 503, response.content
    assert response.headers["Retry-After"] == "30"
    assert response.json() == {
        "error": {"code": code, "message": response.json()["error"]["message"], "fields": {}}
    }
    assert "unavailable" in response.json()["error"]["message"]


def test_the_database_out_of_reach_is_503_with_retry_after_for_reads_and_writes(
    api: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    with database_unreachable(), caplog.at_level(logging.INFO):
        assert_outage(api.get("/api/v1/evaluations/"), "database_unavailable")
        assert_outage(api.get("/api/v1/evaluations/1/"), "database_unavailable")
        assert_outage(
            api.post("/api/v1/evaluations/", submission(), format="json"), "database_unavailable"
        )
    answered = [r for r in caplog.records if r.name == "executions.outages"]
    assert [r.getMessage() for r in answered] == [
        "Database unavailable: answered 503 to GET /api/v1/evaluations/",
        "Database unavailable: answered 503 to GET /api/v1/evaluations/1/",
        "Database unavailable: answered 503 to POST /api/v1/evaluations/",
    ]
    assert all(r.exc_info and r.levelno == logging.ERROR for r in answered)
    # One line per answer, from the platform: Django's request log does not repeat it.
    assert not [r for r in caplog.records if r.name == "django.request"]


def test_the_api_answers_again_when_the_database_is_back(api: APIClient) -> None:
    with database_unreachable():
        assert api.get("/api/v1/evaluations/").status_code == 503
    assert api.get("/api/v1/evaluations/").status_code == 200


@pytest.fixture
def redis_cache(settings: Any, tmp_path: Path) -> Iterator[RedisServer]:
    """The cache (where request rates are counted) in a throw-away Redis the test may stop."""
    with redis_server(tmp_path) as server:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": server.url,
                "KEY_PREFIX": f"evalplatform-test-{uuid.uuid4().hex[:8]}",
                "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            }
        }
        yield server


def counted_requests(user_id: int) -> int:
    """How many of the user's requests the cache holds, read as another process would."""
    key = UserThrottle.cache_format % {"scope": "user", "ident": user_id}
    return len(caches.create_connection("default").get(key) or [])


@pytest.mark.real_service
def test_reads_keep_working_with_redis_stopped_and_rates_fail_open(
    api: APIClient,
    redis_cache: RedisServer,
    roomy_quota: UserQuota,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = api.post("/api/v1/evaluations/", submission(), format="json")
    assert created.status_code == 201, created.content
    evaluation_id = created.json()["id"]
    assert counted_requests(roomy_quota.user.pk) == 1

    redis_cache.stop()
    with caplog.at_level(logging.WARNING, logger="executions.api.throttling"):
        for path in (
            "/api/v1/evaluations/",
            f"/api/v1/evaluations/{evaluation_id}/",
            "/api/v1/runtimes/",
        ):
            response = api.get(path)
            assert response.status_code == 200, (path, response.content)
        # Work is still bounded by the quotas and the queue cap in the database.
        again = api.post("/api/v1/evaluations/", submission(), format="json")
        assert again.status_code == 201, again.content
    warnings = [r for r in caplog.records if r.name == "executions.api.throttling"]
    # The cache is not asked again for a while after it failed.
    assert len(warnings) == 1
    assert "not counted" in warnings[0].getMessage()
    assert isinstance(warnings[0].exc_info and warnings[0].exc_info[1], redis.ConnectionError)
    assert Evaluation.objects.count() == 2

    # Back: requests are counted again once the pause after the failure is over.
    monkeypatch.setattr(throttling, "CACHE_RETRY_S", 0.0)
    throttling._cache_state.reset()
    redis_cache.start()
    caches["default"].close()
    assert api.get("/api/v1/evaluations/").status_code == 200
    assert counted_requests(roomy_quota.user.pk) == 1


def test_a_broker_error_is_503_for_a_read_but_left_alone_after_a_write() -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:1/0")
    try:
        client.ping()
    except redis.RedisError as exc:
        error = exc
    factory = APIRequestFactory()
    read = exception_handler(error, {"request": factory.get("/api/v1/evaluations/")})
    assert read is not None
    assert read.status_code == 503 and read.data["error"]["code"] == "broker_unavailable"
    assert read.headers["Retry-After"] == "30"
    # A POST's transaction is committed before the broker is asked: not an invitation to
    # send it again.
    write = exception_handler(error, {"request": factory.post("/api/v1/evaluations/")})
    assert write is not None
    assert write.status_code == 500 and write.data["error"]["code"] == "server_error"
