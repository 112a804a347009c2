"""The platform's middleware: probes answered on any host over plain HTTP, and pages answered
503 with ``Retry-After`` when the database is out of reach, in each one's own shape."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import connections
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse

from evalplatform.middleware import OutageMiddleware
from tests.stoppable_parts import database_unreachable

pytestmark = pytest.mark.django_db


def assert_outage_page(response: Any) -> str:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Temporarily unavailable" in page
    assert "The database is unavailable. Try again shortly." in page
    assert "Traceback" not in page and "OperationalError" not in page
    return page


def test_pages_answer_a_503_page_when_the_database_is_out_of_reach(
    client: Client, user: Any, staff: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(user)
    with database_unreachable(), caplog.at_level(logging.INFO):
        page = assert_outage_page(client.get(reverse("executions:evaluation-list")))
        assert_outage_page(client.get(reverse("executions:evaluation-detail", args=[1])))
        # The page is rendered without the database: nobody is shown as logged in.
        assert "Log out" not in page
    assert not [r for r in caplog.records if r.name == "django.request"]
    answered = [r.getMessage() for r in caplog.records if r.name == "executions.outages"]
    assert answered == [
        "Database unavailable: answered 503 to GET /",
        "Database unavailable: answered 503 to GET /evaluations/1/",
    ]
    client.force_login(staff)
    with database_unreachable():
        assert_outage_page(client.get("/admin/executions/execution/"))


def test_logging_in_while_the_database_is_out_of_reach_is_a_503_page(
    client: Client, user: Any
) -> None:
    with database_unreachable():
        response = client.post(
            "/login/", {"username": "ada", "password": "correct horse battery staple"}
        )
    assert_outage_page(response)


def test_an_outage_outside_the_apis_views_under_api_is_answered_in_the_api_shape() -> None:
    with database_unreachable():
        try:
            connections["default"].ensure_connection()
        except Exception as exc:
            error = exc
    middleware = OutageMiddleware(lambda request: HttpResponse())
    response = middleware.process_exception(RequestFactory().get("/api/v1/anything/"), error)
    assert response is not None
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert response["Content-Type"] == "application/json"
    assert response.content == (
        b'{"error": {"code": "database_unavailable", "message": '
        b'"The database is unavailable. Try again shortly.", "fields": {}}}'
    )
    # Anything else is not the middleware's to answer.
    assert middleware.process_exception(RequestFactory().get("/"), ValueError("bug")) is None


def test_liveness_answers_on_any_host_even_with_the_database_out_of_reach(
    client: Client, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["evals.example.org"]
    with database_unreachable():
        response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert (response.status_code, response.content) == (200, b"ok")


def test_readiness_answers_on_any_host_over_plain_http(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["evals.example.org"]
    response = client.get("/readyz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json()["status"] == "ready"
    with database_unreachable():
        response = client.get("/readyz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json()["status"] == "unready"
    assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
