"""What a first-time user and a visitor see when the platform picked ``disabled`` in a
container: one next step, the same in the banner and on the security page; the trade-offs
for anyone, the posture for staff only."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from executions import security
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service]

ENGINE_HERE = security.MachineFacts(
    in_kubernetes=False,
    remote_configured=False,
    docker_socket="/var/run/docker.sock",
    dockerd_installed=True,
)


@pytest.fixture
def in_a_container(settings: Any, monkeypatch: pytest.MonkeyPatch) -> security.NextStep:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    monkeypatch.setattr("executions.security.machine_facts", lambda: ENGINE_HERE)
    return security.next_step(ENGINE_HERE)


def test_a_visitor_reads_the_trade_offs_without_logging_in(
    page: Any, live_server: Any, in_a_container: security.NextStep
) -> None:
    response = page.goto(f"{live_server.url}/security/")
    assert response.status == 200 and page.url.endswith("/security/"), "no login redirect"
    expect(page.locator("#backends")).to_contain_text("A compromised platform gets")
    expect(page.locator("#next-step")).to_contain_text(in_a_container.command)
    expect(page.locator("#posture")).to_have_count(0)
    expect(page.locator("header nav")).to_contain_text("Log in")
    screenshot(page, "security-page-visitor")


def test_staff_see_the_same_next_step_in_the_banner_and_on_the_page(
    page: Any, live_server: Any, staff: Any, in_a_container: security.NextStep
) -> None:
    log_in(page, live_server.url, staff.username)
    banner = page.locator("#disabled-banner")
    expect(banner).to_contain_text("inside a container")
    expect(banner.locator(".next-step code")).to_have_text(in_a_container.command)
    screenshot(page, "first-run-banner")
    banner.locator("a").click()
    expect(page.locator("#next-step pre")).to_have_text(in_a_container.command)
    expect(page.locator("#next-step")).to_contain_text("holds the Docker socket")
    expect(page.locator("#posture")).to_contain_text("Where the platform runs")
    screenshot(page, "security-page-next-step")
