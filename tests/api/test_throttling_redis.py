"""With ``REDIS_URL`` the API's request rates are counted in Redis, so every web process (and
pod) enforces one shared count instead of one count each."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from executions.api.throttling import SubmitThrottle
from executions.models import UserQuota
from tests.api.conftest import submission
from tests.conftest import require_real

pytestmark = [pytest.mark.real_service, pytest.mark.django_db]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    import redis

    try:
        redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_real("Redis", f"{REDIS_URL}: {exc}")
    prefix = f"evalplatform-test-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    yield caches["default"]
    # Only this test's keys: clear() would flush the whole database, broker queues included.
    client = redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_submit_rate_is_one_count_shared_through_redis(
    api: APIClient, settings: Any, roomy_quota: UserQuota, redis_cache: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100/min", "submit": "2/min"},
    }
    for _ in range(2):
        response = api.post("/api/v1/evaluations/", submission(), format="json")
        assert response.status_code == 201, response.content
    # A second cache client, as another web process has, sees both requests.
    other_process = caches.create_connection("default")
    key = SubmitThrottle.cache_format % {"scope": "submit", "ident": roomy_quota.user.pk}
    assert len(other_process.get(key)) == 2
    refused = api.post("/api/v1/evaluations/", submission(), format="json")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
