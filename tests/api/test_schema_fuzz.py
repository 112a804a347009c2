"""Schemathesis against the live OpenAPI schema, through the WSGI app: generated requests to
every operation never get a 5xx, and every response matches the schema (status code, content
type, body). Bounded: a few examples per operation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from executions.models import Runtime, UserQuota

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def api_schema(settings: Any, token: str) -> Iterator[Any]:
    settings.ALLOWED_HOSTS = ["localhost"]
    # As Django's test client does: a request must not close the connection that holds the
    # test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        loaded = schemathesis.openapi.from_wsgi(
            "/api/v1/schema/?format=json", get_wsgi_application()
        )
        # The schema and the HTML docs page describe the API; they are not what is fuzzed.
        yield loaded.exclude(path_regex=r"/(schema|docs)/$")
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db: None, runtime: Runtime, settings: Any) -> str:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_WAIT_S": 0}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "submit": "100000/min"},
    }
    user = User.objects.create_user("fuzz", is_staff=False)
    UserQuota.objects.create(user=user, max_concurrent=100_000, max_per_day=100_000)
    return Token.objects.create(user=user).key


def test_api_conforms_to_its_schema(api_schema: Any, token: str) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)

        conforms()
