"""An evaluator and an admin in a real browser: submit, watch, cancel, re-run, and see only
escaped output."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from executions import services
from executions.models import Evaluation, Execution, Runtime
from tests.browser.conftest import log_in, screenshot
from tests.cluster import ClusterFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service, pytest.mark.slow]

RUN_TIMEOUT_MS = 60_000


def type_code(page: Any, code: str) -> None:
    """Type into the code editor as a person would (the editor indents on its own)."""
    page.click(".CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    for line in code.splitlines():
        page.keyboard.type(line.lstrip())
        page.keyboard.press("Enter")
        page.keyboard.press("Home")


def test_submit_with_test_cases_and_watch_it_finish(
    page: Any, live_server: Any, docker_platform: Runtime, user: Any
) -> None:
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/")
    expect(page.locator("#runtime-limits")).to_contain_text("at most 10000 ms")
    page.fill("#id_title", "Squares")
    type_code(page, "n = int(input())\nprint(n * n)")
    page.fill("#id_cases-0-stdin", "3")
    page.fill("#id_cases-0-expected_output", "9")
    page.click("#add-case")
    page.fill("#id_cases-1-stdin", "4")
    page.fill("#id_cases-1-expected_output", "15")
    screenshot(page, "submit-page")

    page.click(".CodeMirror")
    page.keyboard.press("Control+Enter")  # the editor's shortcut submits the form
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    page.evaluate("window.sameDocument = true")

    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    assert page.evaluate("window.sameDocument") is True, "the page updated without a reload"
    expect(page.locator("#verdict")).to_have_text("Wrong answer")
    expect(page.locator("#score")).to_have_text("50.00 / 100")
    verdicts = page.locator("#results tr.result .badge").all_inner_texts()
    assert verdicts == ["Accepted", "Wrong answer"]
    expect(page.locator("#results")).to_contain_text("16")
    screenshot(page, "finished-evaluation")
    evaluation = Evaluation.objects.get(title="Squares")
    results = evaluation.executions.get().results.order_by("test_case__position")
    assert bytes(results[1].stdout) == b"16\n"
    # The sandbox's peak memory, measured by the Docker backend, is shown per test case.
    memory = page.locator("#results tr.result td:nth-child(5)").all_inner_texts()
    assert memory == [f"{result.peak_memory_kb} KB" for result in results], memory
    assert all(result.peak_memory_kb for result in results)


def test_program_output_is_shown_as_text_never_run(
    page: Any, live_server: Any, docker_platform: Runtime, user: Any
) -> None:
    hostile = (
        "print('<script>window.pwned = 1</script>')\n"
        "print('<img src=x onerror=\"window.pwned = 2\">')\n"
    )
    evaluation = services.evaluation_submit(user=user, runtime=docker_platform, source=hostile)
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#stdout")).to_contain_text("<script>window.pwned = 1</script>")
    expect(page.locator("#stdout")).to_contain_text('<img src=x onerror="window.pwned = 2">')
    assert page.evaluate("window.pwned") is None
    assert page.locator("#stdout img, #stdout script").count() == 0


def test_cancel_a_long_run(
    page: Any, live_server: Any, docker_platform: Runtime, user: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=docker_platform,
        source="import time\ntime.sleep(60)\n",
        time_limit_ms=10_000,
    )
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    expect(page.locator("#status")).to_have_text("Running", timeout=RUN_TIMEOUT_MS)
    page.click("#cancel-button")
    expect(page.locator("#status")).to_have_text("Cancelled")
    expect(page.locator("#error-message")).to_contain_text("Cancelled by")
    execution = Execution.objects.get(evaluation=evaluation)
    assert execution.status == "cancelled"


def test_disabled_backend_is_explained(
    page: Any,
    live_server: Any,
    user: Any,
    runtime: Runtime,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    cluster_factory: ClusterFactory,
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    cluster_factory()
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/")
    banner = page.locator("#disabled-banner")
    expect(banner).to_contain_text("Code execution is disabled")
    expect(banner).to_contain_text("inside a container")
    type_code(page, "print('hello')")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    expect(page.locator("#status")).to_have_text("Refused", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#error-message")).to_contain_text("root on the")
    page.click("#disabled-banner a")
    expect(page.locator("#backend-name")).to_have_text("disabled")


def test_admin_reruns_an_evaluation(
    page: Any, live_server: Any, user: Any, staff: Any, docker_platform: Runtime
) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=docker_platform, source="print(1)")
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/evaluations/{evaluation.pk}/")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)

    page.goto(f"{live_server.url}/admin/executions/evaluation/")
    page.check(f"input[name=_selected_action][value='{evaluation.pk}']")
    page.select_option("select[name=action]", "rerun_evaluations")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("re-run queued")
    assert list(evaluation.executions.order_by("attempt").values_list("attempt", flat=True)) == [
        1,
        2,
    ]

    # The cluster runs the re-run on Docker too; the operator's list shows both attempts.
    page.goto(f"{live_server.url}/evaluations/{evaluation.pk}/")
    expect(page.locator(".execution h2")).to_contain_text("Attempt 2")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    page.set_viewport_size({"width": 1680, "height": 900})  # every column in the screenshot
    page.goto(f"{live_server.url}/admin/executions/execution/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    for row in rows.all():
        expect(row).to_contain_text("Finished")
        expect(row).to_contain_text("docker")
    screenshot(page, "admin-execution-list")


def test_security_page_for_an_operator(page: Any, live_server: Any, staff: Any) -> None:
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/security/")
    expect(page.locator("#backends")).to_contain_text("Docker behind the socket proxy")
    expect(page.locator("#posture")).to_contain_text("SECRET_KEY")
    screenshot(page, "security-page")
