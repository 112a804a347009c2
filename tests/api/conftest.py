"""Fixtures for the API tests: token-authenticated clients for a user, another user and staff."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from executions.models import Runtime, UserQuota


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user: User, runtime: Runtime) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_api(other_user: User, runtime: Runtime) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def staff_api(staff: User, runtime: Runtime) -> APIClient:
    return client_for(staff)


@pytest.fixture
def roomy_quota(user: User) -> UserQuota:
    """Enough quota that tests submitting many evaluations are not refused by it."""
    return UserQuota.objects.create(user=user, max_concurrent=10_000, max_per_day=10_000)


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": "python-3.11", "source": "print(input())\n"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}
