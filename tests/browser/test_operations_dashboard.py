"""The operations dashboard in a real browser while things are going wrong: no worker cluster
runs, so submissions have sat queued for minutes; recent runs ended because their backend
failed under them; and a configured execution service does not answer. The page must show all
of it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from executions import services
from executions.models import Execution, Runtime
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service]

# Nothing listens there: the remote backend is configured and cannot be reached.
CLOSED_URL = "http://127.0.0.1:9"
BACKEND_FAILED = '# fake: {"error_kind": "backend_error", "error_message": "engine gone"}\n'


@pytest.fixture
def outage(user: Any, runtime: Runtime, settings: Any, bare_machine: Path) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND_OPTIONS": {"remote": {"urls": (CLOSED_URL,), "secret": "s" * 48}},
    }
    now = timezone.now()
    # Runs that ended a few minutes ago, two of them because the backend failed under them.
    for source in ("print(1)\n", BACKEND_FAILED, BACKEND_FAILED):
        evaluation = services.evaluation_submit(user=user, runtime=runtime, source=source)
        services.execution_run(evaluation.executions.get().pk)
    # Submissions no worker took: queued 6 to 9 minutes ago; no cluster's recovery lane beats.
    for minutes in (9, 8, 6):
        evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(2)\n")
        Execution.objects.filter(evaluation=evaluation).update(
            queued_at=now - timedelta(minutes=minutes)
        )


def test_the_dashboard_shows_a_stuck_queue_failures_and_an_unhealthy_backend(
    page: Any, live_server: Any, staff: Any, outage: None
) -> None:
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/admin/")
    page.click("#operations-module a:text('Dashboard')")
    expect(page.locator("h1")).to_have_text("Operations")

    expect(page.locator("#figure-queued .ops-figure-value")).to_have_text("3")
    expect(page.locator("#figure-oldest .ops-figure-value")).to_contain_text("9 min")
    expect(page.locator("#figure-failed .ops-figure-value")).to_have_text("2")
    queued = page.locator("#chart-queue g[data-series=queued] circle").last
    expect(queued).to_have_attribute("data-value", "3")
    failures = page.locator("#chart-failures rect[data-series=backend_error]")
    expect(failures).to_have_count(1)
    expect(failures).to_have_attribute("data-value", "2")
    expect(page.locator("#chart-failures .ops-legend")).to_contain_text("Backend error")
    expect(page.locator("#chart-throughput rect[data-series=infrastructure]")).to_have_count(1)
    expect(page.locator("#chart-verdicts tr[data-outcome=internal_error]")).to_contain_text("2")

    remote = page.locator("#part-backend-remote")
    expect(remote).to_have_attribute("data-ok", "no")
    expect(remote).to_contain_text("unreachable")
    cluster = page.locator("#part-cluster")
    expect(cluster).to_have_attribute("data-ok", "no")
    expect(cluster).to_contain_text("manage.py qcluster")
    expect(page.locator("#part-database")).to_have_attribute("data-ok", "yes")
    expect(page.locator("#part-backend-fake")).to_have_attribute("data-ok", "yes")
    # Every chart is drawn, and none pushes the page wider than the screen.
    for chart in ("throughput", "queue", "failures", "queue-wait", "run-time"):
        expect(page.locator(f"#chart-{chart} svg")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot(page, "admin-operations-dashboard")

    page.click(".ops-spans a:text('Last day')")
    expect(page.locator(".ops-spans strong")).to_have_text("Last day")
    expect(page.locator("#chart-failures rect[data-series=backend_error]")).to_have_attribute(
        "data-value", "2"
    )
    screenshot(page, "admin-operations-dashboard-day")
