"""The evaluation pages in a real browser: a wrong answer's first difference, the label of a
program that did not start, highlighted source, run again and edit-and-resubmit, every submit
error at once, and the login form."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from executions import services
from executions.models import Evaluation, Runtime
from tests.browser.conftest import log_in, screenshot
from tests.cluster import ClusterFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service, pytest.mark.slow]

RUN_TIMEOUT_MS = 60_000

# Case 1 misses its final newline, case 2 prints markup, a NUL and a byte that is not UTF-8
# where the expected output has a "z", case 3 is right.
DIFFERING_PROGRAM = """\
import sys

n = input()
if n == "1":
    sys.stdout.write("4 2")
elif n == "2":
    sys.stdout.buffer.write(b"ok\\n<b>x</b>\\x00\\xff<script>window.pwned = 1</script>\\n")
else:
    print(int(n) * 2)
"""

HIGHLIGHTED_SOURCE = '''\
def greet(name):
    """Say hello."""
    return f"<b>{name}</b></pre><script>window.pwned = 1</script>"


print(greet("world"))  # a comment
'''


def editor_value(page: Any, selector: str = ".CodeMirror") -> str:
    return str(page.evaluate(f"document.querySelector({selector!r}).CodeMirror.getValue()"))


def test_a_wrong_answer_shows_where_it_first_differs(
    page: Any, live_server: Any, docker_platform: Runtime, user: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=docker_platform,
        source=DIFFERING_PROGRAM,
        title="Doubles",
        test_cases=[
            {"stdin": "1", "expected_output": "4 2\n", "comparison": "exact"},
            {"stdin": "2", "expected_output": "ok\n<b>x</b>z\n", "comparison": "exact"},
            {"stdin": "3", "expected_output": "6"},
        ],
    )
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#verdict")).to_have_text("Wrong answer")

    differences = page.locator("[data-difference]")
    expect(differences).to_have_count(2)
    whitespace = differences.nth(0)
    expect(whitespace).to_contain_text("line 1, character 4")
    expect(whitespace).to_contain_text("whitespace only")
    expect(whitespace).to_contain_text("The output has no final newline.")
    expect(whitespace.locator("mark.diff-char").first).to_have_text("↵")
    hostile = differences.nth(1)
    expect(hostile).to_contain_text("line 2, character 9")
    expect(hostile.locator("mark.diff-char")).to_have_text(["z", "␀"])
    expect(hostile).to_contain_text("\\xff<script>window.pwned·=·1</script>↵")
    expect(page.locator("mark.diff-line").nth(3)).to_contain_text("<b>x</b>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#results script, #results b").count() == 0

    # The attempt's figures are over every case, not the last one's.
    results = evaluation.executions.get().results.all()
    walls = [result.wall_time_ms for result in results if result.wall_time_ms is not None]
    memories = [result.peak_memory_kb for result in results if result.peak_memory_kb is not None]
    assert len(walls) == len(memories) == 3
    expect(page.locator("#max-wall-time")).to_have_text(f"{max(walls)} ms")
    expect(page.locator("#total-wall-time")).to_have_text(f"{sum(walls)} ms")
    expect(page.locator("#max-peak-memory")).to_have_text(f"{max(memories)} KB")
    expect(page.locator("#facts")).to_contain_text("Max wall time")
    page.locator("[data-difference]").first.scroll_into_view_if_needed()
    screenshot(page, "wrong-answer-diff")


def test_a_python_syntax_error_says_the_program_did_not_start(
    page: Any, live_server: Any, docker_platform: Runtime, user: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user, runtime=docker_platform, source="x = 1\ny = 2\nprint(\n", title="Typo"
    )
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#verdict")).to_have_text("Runtime error")
    expect(page.locator("#verdict-detail")).to_have_text(
        "Runtime error — the program did not start: SyntaxError at line 3"
    )
    expect(page.locator("#stderr")).to_contain_text("SyntaxError")
    execution = evaluation.executions.get()
    assert (execution.verdict, execution.exit_code) == ("runtime_error", 1)
    screenshot(page, "syntax-error-label")


def test_source_is_highlighted_and_run_again_appears_when_the_run_ends(
    page: Any, live_server: Any, runtime: Runtime, user: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user, runtime=runtime, source=HIGHLIGHTED_SOURCE, title="Greeting"
    )
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")

    source = page.locator(".source-view")
    expect(source.locator(".cm-keyword").first).to_have_text("def")
    expect(source.locator(".cm-comment")).to_have_text("# a comment")
    expect(source.locator(".cm-string").first).to_be_visible()
    assert editor_value(page, ".source-view .CodeMirror") == HIGHLIGHTED_SOURCE
    assert page.evaluate("window.pwned") is None
    assert source.locator("b, script").count() == 0
    screenshot(page, "highlighted-source")

    # Queued: only Cancel. The run ends without a reload and Run again comes with it.
    expect(page.locator("#status")).to_have_text("Queued")
    expect(page.locator("#cancel-button")).to_be_visible()
    expect(page.locator("#rerun-button")).to_have_count(0)
    page.evaluate("window.sameDocument = true")
    services.execution_run(evaluation.executions.get().pk)
    expect(page.locator("#status")).to_have_text("Finished")
    expect(page.locator("#rerun-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_have_count(0)
    assert page.evaluate("window.sameDocument") is True, "the page updated without a reload"

    page.click("#rerun-button")
    expect(page.locator(".message")).to_contain_text("Attempt 2 was queued.")
    expect(page.locator("#status")).to_have_text("Queued")
    expect(page.locator("#rerun-button")).to_have_count(0)


def test_edit_and_resubmit_opens_a_prefilled_submit_page(
    page: Any, live_server: Any, runtime: Runtime, user: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(int(input()) * 2)\n",
        title="Doubles",
        stdin="21",
        time_limit_ms=2000,
        memory_mb=64,
        output_kb=8,
        test_cases=[
            {"stdin": "1", "expected_output": "2", "weight": 3},
            {"stdin": "50", "expected_output": "100", "hidden": True, "comparison": "numeric"},
        ],
    )
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    page.click("#resubmit-button")
    page.wait_for_url(re.compile(rf"/evaluations/new/\?from={evaluation.pk}$"))
    expect(page.locator("#resubmit-note")).to_contain_text("Starting from Doubles")
    assert editor_value(page) == "print(int(input()) * 2)\n"
    expect(page.locator("#id_title")).to_have_value("Doubles")
    expect(page.locator("#id_runtime")).to_have_value(runtime.name)
    expect(page.locator("#id_stdin")).to_have_value("21")
    expect(page.locator("#id_time_limit_ms")).to_have_value("2000")
    expect(page.locator("#id_memory_mb")).to_have_value("64")
    expect(page.locator("#id_output_kb")).to_have_value("8")
    expect(page.locator("#id_cases-0-stdin")).to_have_value("1")
    expect(page.locator("#id_cases-0-weight")).to_have_value("3")
    expect(page.locator("#id_cases-1-expected_output")).to_have_value("100")
    expect(page.locator("#id_cases-1-comparison")).to_have_value("numeric")
    expect(page.locator("#id_cases-1-hidden")).to_be_checked()
    screenshot(page, "resubmit-form")

    page.evaluate(
        "document.querySelector('.CodeMirror').CodeMirror.setValue('print(int(input()) + 1)\\n')"
    )
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    copy = Evaluation.objects.exclude(pk=evaluation.pk).get()
    assert copy.files == [{"name": "main.py", "content": "print(int(input()) + 1)\n"}]
    assert (copy.stdin, copy.time_limit_ms, copy.memory_mb, copy.output_kb) == ("21", 2000, 64, 8)
    fields = ("stdin", "expected_output", "comparison", "weight", "hidden")
    assert list(copy.test_cases.values_list(*fields)) == list(
        evaluation.test_cases.values_list(*fields)
    )


def test_the_submit_page_reports_every_error_at_once(
    page: Any, live_server: Any, runtime: Runtime, user: Any
) -> None:
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/")
    page.fill("#id_title", "Everything wrong")
    page.fill("#id_memory_mb", "99999")
    page.fill("#id_cases-0-stdin", "1")
    page.select_option("#id_cases-0-comparison", "numeric")
    page.fill("#id_cases-0-tolerance", "-1")
    page.click("#add-case")
    page.fill("#id_cases-1-stdin", "2")
    page.fill("#id_cases-1-weight", "0")
    page.click("#submit-button")
    page.wait_for_load_state()

    errors = page.locator(".errorlist")
    expect(errors).to_have_text(
        [
            "Source is empty.",
            "Must be at most 512, this runtime's cap.",
            "Must be a non-negative number.",
            "Must be a whole number from 1 to 1000.",
        ]
    )
    expect(page.locator("#id_title")).to_have_value("Everything wrong")
    assert not Evaluation.objects.exists()
    screenshot(page, "submit-all-errors")


def test_the_login_fields_are_alike(page: Any, live_server: Any) -> None:
    page.goto(f"{live_server.url}/login/")
    name = page.locator("#id_username").bounding_box()
    password = page.locator("#id_password").bounding_box()
    assert name["width"] == password["width"], (name, password)
    assert name["x"] == password["x"] and name["height"] == password["height"]
    assert 240 <= name["width"] <= 420, "a narrow form, not the page's width"
    screenshot(page, "login-page")


def test_resubmitting_as_staff_leaves_out_someone_elses_hidden_cases(
    page: Any, live_server: Any, runtime: Runtime, user: Any, staff: Any
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(1)\n",
        test_cases=[
            {"stdin": "open", "expected_output": "1"},
            {"stdin": "secret-in", "expected_output": "secret-out", "hidden": True},
        ],
    )
    log_in(page, live_server.url, staff.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    page.click("#resubmit-button")
    expect(page.locator("#resubmit-note")).to_contain_text("Its 1 hidden test case is not copied")
    expect(page.locator("#id_cases-0-stdin")).to_have_value("open")
    assert "secret" not in page.content()


def test_cluster_runs_a_resubmission(
    page: Any, live_server: Any, runtime: Runtime, user: Any, cluster_factory: ClusterFactory
) -> None:
    """The fake backend in a real cluster: a resubmitted evaluation runs like any other."""
    cluster_factory()
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)\n")
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    page.click("#resubmit-button")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    expect(page.locator("#status")).to_have_text("Finished", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#rerun-button")).to_be_visible()
