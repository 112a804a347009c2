"""Quotas and throttles (429), and the global queue depth (503)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from executions.api.throttling import UserThrottle
from executions.models import Evaluation, UserQuota
from tests.api.conftest import submission

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, body, format="json", headers=headers)


# Quotas and throttles ----------------------------------------------------------------------


def test_quota_is_429_with_retry_after(api: APIClient, user: User) -> None:
    UserQuota.objects.create(user=user, max_concurrent=1)
    assert post(api, "/api/v1/evaluations/", submission()).status_code == 201
    refused = post(api, "/api/v1/evaluations/", submission())
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "quota_concurrent"


def test_quota_stops_a_batch(api: APIClient, user: User) -> None:
    UserQuota.objects.create(user=user, max_concurrent=2)
    refused = post(api, "/api/v1/evaluations/batch/", {"items": [submission()] * 3})
    assert refused.status_code == 429
    assert Evaluation.objects.count() == 0


def test_throttle_is_429_with_retry_after(
    api: APIClient, settings: Any, roomy_quota: UserQuota
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100/min", "submit": "2/min"},
    }
    UserThrottle.cache.clear()
    assert post(api, "/api/v1/evaluations/", submission()).status_code == 201
    assert post(api, "/api/v1/evaluations/", submission()).status_code == 201
    refused = post(api, "/api/v1/evaluations/", submission())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused.headers["Retry-After"]) > 0
    # Reads are counted apart from submissions.
    assert api.get("/api/v1/evaluations/").status_code == 200
    UserThrottle.cache.clear()


# Queue depth -------------------------------------------------------------------------------


def test_queue_depth_is_503(api: APIClient, settings: Any, roomy_quota: UserQuota) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "MAX_QUEUE_DEPTH": 1}
    assert post(api, "/api/v1/evaluations/", submission()).status_code == 201
    refused = post(api, "/api/v1/evaluations/", submission())
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "10"
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and "busy" in error["message"]
    batch = post(api, "/api/v1/evaluations/batch/", {"items": [submission()]})
    assert batch.status_code == 503
    assert Evaluation.objects.count() == 1
