"""The operator's admin pages in a real browser at 1280 px: every execution column on screen,
source files shown as code, no way to delete history, and re-runs offered only on backends
that are configured here and healthy."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from executions import services
from executions.models import Evaluation, Runtime
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service]

# The execution list's columns an operator reads, by their list_display names.
OPERATOR_COLUMNS = ("status_", "verdict_", "backend", "runtime", "duration", "score")
CRLF_SOURCE = "n = int(input())\r\nprint(n * n)\r\n"


@pytest.fixture
def history(user: Any, runtime: Runtime) -> list[Evaluation]:
    """A few finished attempts with long titles and every kind of outcome, run in-process on
    the fake backend (no cluster needed: the pages only read them)."""
    cases = [{"name": "three", "stdin": "3", "expected_output": "9"}]
    outcomes = [
        ("Squares of every integer read from standard input, judged", CRLF_SOURCE, cases),
        ("A program that exits with status 3", '# fake: {"exit_code": 3}\n', []),
        (
            "An infrastructure failure seen from the operator's console",
            '# fake: {"error_kind": "backend_error", "error_message": "engine gone"}\n',
            [],
        ),
        ("Runtime error with a signal", '# fake: {"signal": 9}\n', []),
    ]
    evaluations = []
    for title, source, test_cases in outcomes:
        evaluation = services.evaluation_submit(
            user=user, runtime=runtime, source=source, title=title, test_cases=test_cases
        )
        services.execution_run(evaluation.executions.get().pk)
        evaluations.append(evaluation)
    # One still queued, so the list shows every lifecycle state it can.
    services.evaluation_submit(user=user, runtime=runtime, source="print(1)", title="Queued")
    return evaluations


def outside_viewport(page: Any, selector: str) -> list[str]:
    """Elements matching ``selector`` that are not wholly inside the visible width: past the
    viewport's right edge, or clipped by a scrolling ancestor (the list's own scroll box)."""
    result: list[str] = page.evaluate(
        """(selector) => {
            const width = document.documentElement.clientWidth;
            const bad = [];
            for (const element of document.querySelectorAll(selector)) {
                const box = element.getBoundingClientRect();
                let right = width;
                for (let up = element.parentElement; up; up = up.parentElement) {
                    const style = getComputedStyle(up);
                    if (style.overflowX !== "visible") {
                        right = Math.min(right, up.getBoundingClientRect().right);
                    }
                }
                if (box.left < 0 || box.right > right + 0.5 || box.width === 0) {
                    bad.push(`${element.className}: ${Math.round(box.left)}..`
                        + `${Math.round(box.right)} of ${Math.round(right)}`);
                }
            }
            return bad;
        }""",
        selector,
    )
    return result


def assert_every_column_visible(page: Any) -> None:
    for column in OPERATOR_COLUMNS:
        header = f"#result_list thead th.column-{column}"
        cells = f"#result_list tbody td.field-{column}"
        assert page.locator(header).count() == 1, column
        assert page.locator(cells).count() == 5, column
        assert outside_viewport(page, header) == [], column
        assert outside_viewport(page, cells) == [], column
    # Badges are not clipped inside their cells, and nothing scrolls sideways.
    assert outside_viewport(page, "#result_list .badge") == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    overflowing = page.evaluate(
        """() => [...document.querySelectorAll('#result_list td, #result_list th')]
            .filter((cell) => cell.scrollWidth > cell.clientWidth + 1)
            .map((cell) => cell.className)"""
    )
    assert overflowing == []


def test_every_execution_column_is_visible_at_1280(
    page: Any, live_server: Any, staff: Any, history: list[Evaluation]
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/admin/executions/execution/")
    expect(page.locator("#result_list tbody tr")).to_have_count(5)
    expect(page.locator("#nav-sidebar")).to_be_visible()
    screenshot(page, "admin-execution-list-1280")
    assert_every_column_visible(page)
    # With the navigation sidebar closed the table is wider; it still fits.
    page.click("#toggle-nav-sidebar")
    expect(page.locator("#nav-sidebar")).to_be_hidden()
    screenshot(page, "admin-execution-list-1280-no-sidebar")
    assert_every_column_visible(page)


def test_evaluation_page_shows_files_as_code(
    page: Any, live_server: Any, staff: Any, history: list[Evaluation]
) -> None:
    evaluation = history[0]
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/admin/executions/evaluation/{evaluation.pk}/change/")
    files = page.locator(".field-files_ .source-file")
    expect(files).to_have_count(1)
    expect(files.locator(".source-file-name")).to_have_text("main.py")
    code = files.locator("pre code")
    assert code.inner_text() == "n = int(input())\nprint(n * n)\n"
    body = page.locator("#content").inner_text()
    assert "\\r\\n" not in body and '"content":' not in body
    screenshot(page, "admin-evaluation-files")


def test_history_offers_no_delete(
    page: Any, live_server: Any, staff: Any, history: list[Evaluation]
) -> None:
    evaluation = history[0]
    execution = evaluation.executions.get()
    log_in(page, live_server.url, staff.username)
    for model in ("evaluation", "execution"):
        page.goto(f"{live_server.url}/admin/executions/{model}/")
        actions = page.locator("select[name=action] option").evaluate_all(
            "(options) => options.map((option) => option.value)"
        )
        assert "delete_selected" not in actions, (model, actions)
    for url in (
        f"/admin/executions/evaluation/{evaluation.pk}/change/",
        f"/admin/executions/execution/{execution.pk}/change/",
    ):
        page.goto(f"{live_server.url}{url}")
        expect(page.locator("#content-main")).to_be_visible()
        assert page.locator("a.deletelink, .deletelink-box").count() == 0, url
        assert page.locator("input[name$=DELETE]").count() == 0, url
    screenshot(page, "admin-execution-no-delete")


def test_rerun_form_offers_only_healthy_configured_backends(
    page: Any,
    live_server: Any,
    staff: Any,
    history: list[Evaluation],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    # This machine as the issue saw it: no cluster, no execution service, and a Docker
    # engine that is configured but does not answer.
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    evaluation = history[0]
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/admin/executions/evaluation/")
    page.check(f"input[name=_selected_action][value='{evaluation.pk}']")
    page.select_option("select[name=action]", "rerun_on_backend")
    page.click("button[name=index]")

    choices = page.locator("input[name=backend]")
    values = choices.evaluate_all("(inputs) => inputs.map((input) => input.value)")
    enabled = page.locator("input[name=backend]:not([disabled])").evaluate_all(
        "(inputs) => inputs.map((input) => input.value)"
    )
    assert values == ["fake", "docker"]
    assert enabled == ["fake"]
    expect(page.locator("input[name=backend][value=fake]")).to_be_checked()
    form = page.locator("#rerun-backends")
    expect(form).to_contain_text("fake (active)")
    expect(form).to_contain_text("Fake backend: nothing is executed.")
    expect(form).to_contain_text("tcp://127.0.0.1:9")
    screenshot(page, "admin-rerun-on-backend")

    page.click("input[name=apply]")
    expect(page.locator(".messagelist")).to_contain_text("Queued 1 re-run(s) on fake")
    assert evaluation.executions.filter(attempt=2, backend="fake").exists()


def test_backend_health_shows_each_error_once(page: Any, live_server: Any, staff: Any) -> None:
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}/admin/executions/backend-health/")
    # No service URLs in tests: the remote backend cannot be built, so both probes fail alike.
    errors = page.locator("#backend-remote .errornote")
    expect(errors).to_have_count(1)
    expect(errors).to_contain_text("EXECUTION_REMOTE_URLS")
    screenshot(page, "admin-backend-health")
