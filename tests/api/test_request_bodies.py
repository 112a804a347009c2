"""Malformed request bodies against every endpoint that takes a POST: each is a 400 (415 for a
type other than JSON) in the API's error shape, never a 500, and nothing is done or stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from executions import services
from executions.api.parsers import MAX_DEPTH
from executions.models import (
    AuditEvent,
    Evaluation,
    Execution,
    IdempotencyKey,
    Runtime,
    WebhookSecret,
)
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

JSON = "application/json"
HUGE = 3 * 1024 * 1024  # over the body cap these tests set (2 MiB)


@pytest.fixture(autouse=True)
def _small_body_cap(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_BODY_BYTES": 2 * 1024 * 1024}


@dataclass(frozen=True)
class Body:
    id: str
    raw: bytes
    content_type: str = JSON
    status: int = 400
    code: str = "parse_error"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BODIES = [
    Body("deep-nesting-unclosed", b"[" * 100_000),
    Body("deep-nesting-closed", nested(100_000)),
    Body("deep-object-nesting", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    # Parses within Python's recursion limit, but deeper than any body the API takes.
    Body("nesting-over-the-bound", b'{"runtime": ' + nested(MAX_DEPTH + 1) + b"}"),
    Body("truncated", b'{"runtime": "python-3.11", '),
    Body("not-json", b"{nope"),
    Body("whitespace-only", b"  \n "),
    Body("invalid-utf8", b'{"runtime": "python-3.11", "source": "\xff\xfe"}'),
    Body("overlong-utf8", b'{"source": "\xc0\xaf"}'),
    Body("integer-5000-digits", b'{"limits": {"time_limit_ms": ' + b"9" * 5000 + b"}}"),
    Body("float-5000-digits", b'{"test_cases": [{"tolerance": 1' + b"0" * 5000 + b".5}]}"),
    Body("float-overflow", b'{"test_cases": [{"tolerance": 1e999}]}'),
    Body("nan", b'{"test_cases": [{"tolerance": NaN}]}'),
    Body("infinity", b'{"test_cases": [{"tolerance": Infinity}]}'),
    Body("minus-infinity", b'{"test_cases": [{"tolerance": -Infinity}]}'),
    Body("lone-surrogate", b'{"runtime": "python-3.11", "source": "print(1)\\ud800"}'),
    Body("lone-low-surrogate", b'{"runtime": "python-3.11", "title": "\\udc00"}'),
    Body("lone-surrogate-in-key", b'{"\\ud800": 1}'),
    Body("json-string", b'"hello"'),
    Body("json-array", b'[{"runtime": "python-3.11", "source": "1"}]'),
    Body("json-null", b"null"),
    Body("json-number", b"1"),
    Body("json-true", b"true"),
    Body(
        "huge",
        b'{"runtime": "python-3.11", "source": "' + b"x" * HUGE + b'"}',
        status=413,
        code="body_too_large",
    ),
    Body("nul-and-garbage", b"\x00\x01\x02"),
    Body("text-plain", b'{"runtime": "python-3.11"}', "text/plain", 415, "unsupported_media_type"),
    Body(
        "form-urlencoded",
        b"runtime=python-3.11&source=print(1)",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    Body(
        "multipart",
        b'--b\r\nContent-Disposition: form-data; name="runtime"\r\n\r\npython-3.11\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        415,
        "unsupported_media_type",
    ),
    Body("multipart-no-boundary", b"garbage", "multipart/form-data", 415, "unsupported_media_type"),
    Body("no-content-type", b'{"runtime": "python-3.11"}', "", 415, "unsupported_media_type"),
    Body("xml", b"<runtime/>", "application/xml", 415, "unsupported_media_type"),
]


@pytest.fixture
def evaluation(user: User, runtime: Runtime) -> Evaluation:
    """One evaluation with a queued execution: what rerun and cancel would act on."""
    found = services.evaluation_submit(user=user, runtime=runtime, source="print(1)\n")
    services.webhook_secret_rotate(user)
    return found


ENDPOINTS = {
    "submit": "/api/v1/evaluations/",
    "batch": "/api/v1/evaluations/batch/",
    "rerun": "/api/v1/evaluations/{pk}/rerun/",
    "cancel": "/api/v1/evaluations/{pk}/cancel/",
    "webhook-secret": "/api/v1/webhook-secret/",
}


def state() -> tuple[Any, ...]:
    """Everything a POST to these endpoints could change."""
    return (
        list(Evaluation.objects.values_list("pk", flat=True)),
        list(Execution.objects.order_by("pk").values_list("pk", "status")),
        list(WebhookSecret.objects.values_list("user_id", "secret")),
        IdempotencyKey.objects.count(),
        AuditEvent.objects.count(),
    )


def post_raw(client: APIClient, path: str, raw: bytes, content_type: str, **headers: Any) -> Any:
    """POST these exact bytes (the client's stubs say ``str``; Django sends bytes as they
    are)."""
    data: Any = raw
    return client.generic("POST", path, data, content_type=content_type, **headers)


def post(client: APIClient, path: str, body: Body, **headers: Any) -> Any:
    return post_raw(client, path, body.raw, body.content_type, **headers)


def assert_refused(response: Any, body: Body) -> None:
    assert response.status_code == body.status, response.content[:500]
    assert response["Content-Type"] == JSON
    error = response.json()["error"]
    assert error["code"] == body.code
    assert isinstance(error["message"], str) and error["message"]
    assert error["fields"] == {}
    # The message speaks of the body, not of the interpreter that read it.
    assert "sys." not in error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize("idempotency_key", [False, True], ids=["plain", "idempotent"])
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("body", BODIES, ids=[body.id for body in BODIES])
def test_malformed_body_is_refused_and_changes_nothing(
    user: User, evaluation: Evaluation, endpoint: str, body: Body, idempotency_key: bool
) -> None:
    before = state()
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-1"} if idempotency_key else {}
    path = ENDPOINTS[endpoint].format(pk=evaluation.pk)
    response = post(client_for(user), path, body, **headers)
    assert_refused(response, body)
    assert state() == before


SESSION_BODIES = [
    *(b for b in BODIES if b.id in {"deep-nesting-unclosed", "lone-surrogate", "huge"}),
    # The CSRF check reads a form body (request.POST); through DRF, that is this API's parser.
    *(
        Body(name, raw, "application/x-www-form-urlencoded", 415, "unsupported_media_type")
        for name, raw in [("huge-form", b"runtime=" + b"x" * HUGE), ("form-bad", b"%ff=%")]
    ),
    Body("multipart-no-boundary", b"garbage", "multipart/form-data", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("body", SESSION_BODIES, ids=[body.id for body in SESSION_BODIES])
def test_malformed_body_with_session_authentication(
    user: User, evaluation: Evaluation, body: Body
) -> None:
    """A browser session's request passes Django's CSRF check, which reads form bodies, before
    DRF parses anything; the body is still refused in the API's shape."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    before = state()
    response = post(client, "/api/v1/evaluations/", body, HTTP_X_CSRFTOKEN=token)
    assert_refused(response, body)
    assert state() == before


def test_body_at_the_size_limit_is_read(user: User, runtime: Runtime, settings: Any) -> None:
    """The cap is EXECUTION_API_MAX_BODY_BYTES: a body of exactly that size is parsed, one
    byte more is refused with 413, unread."""
    raw = b'{"runtime": "python-3.11", "source": "print(1)", "title": "' + b"t" * 10 + b'"}'
    settings.EXECUTIONS = {**settings.EXECUTIONS, "API_MAX_BODY_BYTES": len(raw)}
    client = client_for(user)
    response = post_raw(client, "/api/v1/evaluations/", raw, content_type=JSON)
    assert response.status_code == 201, response.content
    longer = raw[:-2] + b't"}'
    response = post_raw(client, "/api/v1/evaluations/", longer, content_type=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert "EXECUTION_API_MAX_BODY_BYTES" in response.json()["error"]["message"]
    assert Evaluation.objects.count() == 1


@pytest.mark.parametrize(
    "raw",
    [
        # The deepest body the API takes: a batch item's test case.
        b'{"items": [{"runtime": "python-3.11", "source": "1", '
        b'"test_cases": [{"stdin": "1", "expected_output": "1", "tolerance": 0.5}]}]}',
        # An escaped pair of surrogates is one character, not a lone surrogate.
        b'{"items": [{"runtime": "python-3.11", "source": "print(\\"\\ud83d\\ude00\\")"}]}',
    ],
)
def test_well_formed_bodies_still_pass(user: User, runtime: Runtime, raw: bytes) -> None:
    response = post_raw(client_for(user), "/api/v1/evaluations/batch/", raw, content_type=JSON)
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("endpoint", ["rerun", "cancel", "webhook-secret"])
@pytest.mark.parametrize("content_type", [JSON, "", "application/x-www-form-urlencoded"])
def test_empty_body_is_no_body(
    user: User, evaluation: Evaluation, endpoint: str, content_type: str
) -> None:
    """Endpoints whose body is optional take an empty one (``curl -X POST``), whatever the
    Content-Type header says; submit and batch need one and say which field is missing."""
    path = ENDPOINTS[endpoint].format(pk=evaluation.pk)
    response = post_raw(client_for(user), path, b"", content_type=content_type)
    assert response.status_code in {200, 201}, response.content


@pytest.mark.parametrize(("endpoint", "field"), [("submit", "runtime"), ("batch", "items")])
def test_empty_body_where_one_is_needed(
    user: User, evaluation: Evaluation, endpoint: str, field: str
) -> None:
    before = state()
    response = post_raw(client_for(user), ENDPOINTS[endpoint], b"", content_type=JSON)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert state() == before
