"""The operations dashboard in admin: staff only, linked from the admin index, its charts and
health drawn from known executions, a bad span refused by name, and a fixed cost in queries."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from executions.models import Runtime, Status, Verdict
from tests.records import evaluation_of, finished, record

pytestmark = pytest.mark.django_db

URL = "/admin/executions/operations/"


@pytest.fixture
def admin_client_(client: Client, staff: Any, bare_machine: Path) -> Client:
    client.force_login(staff)
    return client


@pytest.fixture
def history(user: Any, runtime: Runtime) -> None:
    """The last few minutes: runs accepted and wrong, two lost workers, a queue that waits."""
    evaluation = evaluation_of(user, runtime)
    now = timezone.now()
    for _ in range(3):
        finished(evaluation, now - timedelta(minutes=4), wait_s=2, run_s=1)
    finished(
        evaluation, now - timedelta(minutes=3), wait_s=2, run_s=1, verdict=Verdict.WRONG_ANSWER
    )
    for _ in range(2):
        finished(
            evaluation,
            now - timedelta(minutes=2),
            wait_s=1,
            run_s=30,
            status=Status.ERROR,
            verdict=Verdict.INTERNAL_ERROR,
            error_kind="worker_lost",
        )
    record(evaluation, status=Status.QUEUED, queued_at=now - timedelta(minutes=7))


def bars(html: str, chart: str) -> dict[str, int]:
    """The bars of one chart on the page: series -> the sum of their values."""
    section = re.search(rf'<figure class="ops-chart" id="{chart}">(.*?)</figure>', html, re.S)
    assert section, chart
    found: dict[str, int] = {}
    for series, value in re.findall(
        r'<rect [^>]*data-series="([^"]+)" data-value="([^"]+)"', section.group(1)
    ):
        found[series] = found.get(series, 0) + int(value)
    return found


def test_the_dashboard_draws_known_runs(admin_client_: Client, history: None) -> None:
    response = admin_client_.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert bars(html, "chart-throughput") == {"accepted": 3, "rejected": 1, "infrastructure": 2}
    assert bars(html, "chart-failures") == {"worker_lost": 2}
    assert 'data-outcome="internal_error"' in html
    dashboard = response.context["dashboard"]
    assert (dashboard.queued_now, dashboard.ended, dashboard.failed) == (1, 6, 2)
    assert re.search(r'id="figure-oldest"><span class="ops-figure-value">7 min \d+ s<', html)
    assert '<tr id="part-database" data-ok="yes">' in html
    assert '<tr id="part-backend-fake" data-ok="yes">' in html
    for chart in ("chart-queue", "chart-queue-wait", "chart-run-time"):
        assert f'id="{chart}"' in html


def test_the_day_and_a_bad_span(admin_client_: Client, history: None) -> None:
    response = admin_client_.get(URL, {"span": "day"})
    assert response.status_code == 200
    assert len(response.context["dashboard"].starts) == 24
    refused = admin_client_.get(URL, {"span": "week"})
    assert refused.status_code == 400
    assert refused.content.decode() == "span: expected one of hour, day, got 'week'."


def test_only_staff_see_it(client: Client, user: Any) -> None:
    assert client.get(URL).status_code == 302
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_admin_index_links_to_it(admin_client_: Client) -> None:
    html = admin_client_.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}">Dashboard</a>' in html
    assert reverse("admin:executions_operations") == URL


def test_the_page_costs_a_fixed_number_of_queries(
    admin_client_: Client,
    history: None,
    user: Any,
    runtime: Runtime,
    django_assert_max_num_queries: Any,
) -> None:
    admin_client_.get(URL)  # the session and the user, once loaded
    evaluation = evaluation_of(user, runtime)
    now = timezone.now()
    for minute in range(50):
        finished(evaluation, now - timedelta(minutes=minute), wait_s=minute, run_s=1)
    with django_assert_max_num_queries(8):
        assert admin_client_.get(URL).status_code == 200
