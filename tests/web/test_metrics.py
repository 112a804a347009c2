"""``/metrics`` is off until a token is set, then answers only a request that carries it: an
anonymous request, a wrong token or a staff session without it get nothing. With the token it
answers on any host over plain HTTP, as ``/healthz`` does, for a scraper inside the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-" + "x" * 40


@pytest.fixture
def metrics_on(settings: Any, bare_machine: Path) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_off_without_a_token_for_everyone(client: Client, settings: Any, staff: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=bearer("")).status_code == 404
    client.force_login(staff)
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert (response.status_code, response.content) == (404, b"")


def test_an_anonymous_request_gets_nothing(client: Client, metrics_on: str) -> None:
    response = client.get("/metrics")
    assert (response.status_code, response.content) == (401, b"")
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
    ],
    ids=["short", "long", "basic", "no-scheme", "no-token"],
)
def test_anything_but_the_token_gets_nothing(
    client: Client, metrics_on: str, authorization: str
) -> None:
    response = client.get("/metrics", headers={"Authorization": authorization})
    assert (response.status_code, response.content) == (401, b"")


def test_a_staff_session_without_the_token_gets_nothing(
    client: Client, metrics_on: str, staff: Any
) -> None:
    client.force_login(staff)
    response = client.get("/metrics")
    assert (response.status_code, response.content) == (401, b"")


def test_the_token_gets_the_metrics(client: Client, metrics_on: str) -> None:
    response = client.get("/metrics", headers=bearer(metrics_on))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    families = {
        family.name: family for family in text_string_to_metric_families(response.content.decode())
    }
    assert families["evalplatform_queue_depth"].samples[0].value == 0
    assert (
        client.get("/metrics", headers={"Authorization": f"bearer {metrics_on}"}).status_code == 200
    )


def test_it_answers_any_host_over_plain_http(
    client: Client, metrics_on: str, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["evals.example.org"]
    response = client.get("/metrics", HTTP_HOST="10.1.2.3:8000", headers=bearer(metrics_on))
    assert response.status_code == 200
    assert b"evalplatform_queue_depth" in response.content
    refused = client.get("/metrics", HTTP_HOST="10.1.2.3:8000")
    assert (refused.status_code, refused.content) == (401, b"")


def test_only_reads(client: Client, metrics_on: str) -> None:
    assert client.post("/metrics", headers=bearer(metrics_on)).status_code == 405
