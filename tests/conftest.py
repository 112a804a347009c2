"""Shared fixtures. Tests run against the real database configured by DATABASE_URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django_q.conf import Conf

from executions import backends
from executions.backends.fake import FakeBackend
from executions.models import Runtime, UserQuota


def require_real(part: str, reason: str) -> NoReturn:
    """A test that needs a real outside part which is not there: skip locally, fail in CI."""
    message = f"{part} is not available: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _test_settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Production settings redirect to HTTPS; the test client speaks plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    # Real hashing costs a second per test user; strength is not under test here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "fake"}
    # Tasks enqueued by tests go to a queue of their own, never to a real cluster's.
    monkeypatch.setattr(Conf, "PREFIX", "evalplatform-tests")
    monkeypatch.setattr(Conf, "CLUSTER_NAME", "evalplatform-tests")
    FakeBackend.reset()
    backends.reset()
    # Request counts live in the cache; a user id reused by a later test would otherwise
    # inherit an earlier test's requests and be throttled. Tests count in their own memory
    # (clearing a Redis cache would flush the database the task broker uses too);
    # tests/api/test_throttling_redis.py covers the Redis cache.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    caches["default"].clear()
    yield
    backends.reset()


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("ada", password="correct horse battery staple")


@pytest.fixture
def other_user(db: None) -> User:
    return User.objects.create_user("grace", password="correct horse battery staple")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("root", password="correct horse battery staple")


@pytest.fixture
def roomy_quota(user: User) -> UserQuota:
    """Enough quota that tests submitting many evaluations are not refused by it."""
    return UserQuota.objects.create(user=user, max_concurrent=10_000, max_per_day=10_000)


@pytest.fixture
def runtime(db: None) -> Runtime:
    return Runtime.objects.create(
        name="python-3.11",
        display_name="Python 3.11",
        image="evalplatform/python:3.11",
        command=["python3", "main.py"],
        file_name="main.py",
    )
