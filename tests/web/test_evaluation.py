"""The evaluation page: results and who sees them, figures, differences, labels, live, run again."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.models import Runtime
from executions.services.running import COMPILE_OUTPUT_BYTES
from sandbox.contract import RunResult
from tests.services.conftest import fake

from .support import run_cases, text_of

pytestmark = pytest.mark.django_db


def test_program_output_is_escaped(
    logged_in: Client, user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.HostileOutputBackend",
    }
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # NUL shown as U+2400, invalid UTF-8 (\xff\xfe, \xc3\x28) as U+FFFD.
    assert "a\u2400b\ufffd\ufffd" in page and "\ufffd(" in page


def test_other_users_evaluations_are_invisible(
    client: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    execution = evaluation.executions.get()
    client.force_login(other_user)
    assert client.get(evaluation.get_absolute_url()).status_code == 404
    assert (
        client.post(reverse("executions:execution-cancel", args=[execution.pk])).status_code == 404
    )
    assert (
        client.post(reverse("executions:evaluation-rerun", args=[evaluation.pk])).status_code == 404
    )
    assert (
        "Nothing submitted yet"
        in client.get(reverse("executions:evaluation-list")).content.decode()
    )
    execution.refresh_from_db()
    assert execution.status == "queued" and evaluation.executions.count() == 1


def test_hidden_cases_show_no_input_or_expected_output(
    client: Client, user: Any, staff: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(1)",
        test_cases=[
            {"stdin": "visible-input", "expected_output": "x"},
            {"stdin": "secret-input", "expected_output": "secret-answer", "hidden": True},
        ],
    )
    services.execution_run(evaluation.executions.get().pk)
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "visible-input" in page
    assert "secret-input" not in page and "secret-answer" not in page
    client.force_login(staff)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "secret-input" in page and "secret-answer" in page


def test_cancel_and_rerun_buttons(logged_in: Client, user: Any, runtime: Runtime) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    execution = evaluation.executions.get()
    logged_in.post(reverse("executions:execution-cancel", args=[execution.pk]))
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    logged_in.post(reverse("executions:evaluation-rerun", args=[evaluation.pk]))
    assert list(evaluation.executions.order_by("attempt").values_list("status", flat=True)) == [
        "cancelled",
        "queued",
    ]
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "History" in page and "Cancelled" in page


def test_live_section_follows_the_run(logged_in: Client, user: Any, runtime: Runtime) -> None:
    first = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    second = services.evaluation_submit(user=user, runtime=runtime, source="print(2)")
    live = reverse("executions:evaluation-live", args=[second.pk])
    fragment = logged_in.get(live).content.decode()
    assert 'data-active="true"' in fragment and "position 2 in the queue" in fragment
    assert "<html" not in fragment, "only the section, for the page to swap in"
    services.execution_run(first.executions.get().pk)
    services.execution_run(second.executions.get().pk)
    fragment = logged_in.get(live).content.decode()
    assert 'data-active="false"' in fragment and "Finished" in fragment


def test_live_section_is_private(
    client: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    client.force_login(other_user)
    assert (
        client.get(reverse("executions:evaluation-live", args=[evaluation.pk])).status_code == 404
    )


# Resource figures over test cases ------------------------------------------------------------


def test_attempt_figures_are_the_maximum_and_total_over_test_cases(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b"1"] = RunResult(
        exit_code=0, stdout=b"1", wall_time_ms=300, peak_memory_bytes=9 << 20
    )
    scripted[b"2"] = RunResult(exit_code=0, stdout=b"2", wall_time_ms=40, peak_memory_bytes=2 << 20)
    evaluation = run_cases(
        user,
        runtime,
        [{"stdin": "1", "expected_output": "1"}, {"stdin": "2", "expected_output": "2"}],
    )
    execution = evaluation.executions.get()
    assert execution.wall_time_ms == 40, "the execution row keeps the last case's figures"
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "<dt>Max wall time</dt>" in page and text_of(page, "max-wall-time") == "300 ms"
    assert "<dt>Total wall time</dt>" in page and text_of(page, "total-wall-time") == "340 ms"
    assert "<dt>Max peak memory</dt>" in page and text_of(page, "max-peak-memory") == "9216 KB"
    assert "<dt>Wall time</dt>" not in page


def test_a_run_without_test_cases_shows_its_own_figures(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b""] = RunResult(exit_code=0, wall_time_ms=25, peak_memory_bytes=4 << 20)
    evaluation = run_cases(user, runtime, [])
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "wall-time") == "25 ms" and text_of(page, "peak-memory") == "4096 KB"
    assert "Max wall time" not in page


# The first difference of a wrong answer ------------------------------------------------------


def test_wrong_answer_marks_the_first_difference_escaped(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b"1"] = RunResult(exit_code=0, stdout=b"ok\n<b>x</b>\x00\xff<script>y</script>\n")
    evaluation = run_cases(
        user, runtime, [{"stdin": "1", "expected_output": "ok\n<b>x</b>z\n", "comparison": "exact"}]
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "First difference:</strong>\n    line 2, character 9." in page
    assert '<mark class="diff-char">\u2400</mark>' in page, "NUL shown as a symbol and marked"
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "\\xff&lt;script&gt;y&lt;/script&gt;" in page
    assert "<script>y" not in page and "<b>x" not in page
    # The differing line is marked in both full outputs too.
    assert '<mark class="diff-line">&lt;b&gt;x&lt;/b&gt;z</mark>' in page
    assert "whitespace only" not in page


def test_a_whitespace_only_difference_is_named(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b"1"] = RunResult(exit_code=0, stdout=b"4 2")
    evaluation = run_cases(
        user, runtime, [{"stdin": "1", "expected_output": "4 2\n", "comparison": "exact"}]
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "whitespace only" in page and "The output has no final newline." in page
    assert "4·2<mark" in page and "↵</mark>" in page


def test_no_difference_is_shown_for_a_hidden_case_to_its_non_staff_owner(
    client: Client, user: Any, staff: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b"secret-input"] = RunResult(exit_code=0, stdout=b"secret-output")
    evaluation = run_cases(
        user,
        runtime,
        [{"stdin": "secret-input", "expected_output": "secret-answer", "hidden": True}],
    )
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "Wrong answer" in page
    assert "First difference" not in page and "secret" not in page
    client.force_login(staff)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "First difference" in page and "secret-answer" in page


# The label of a program that did not start ---------------------------------------------------

SYNTAX_ERROR = b"""  File "/box/main.py", line 3
    print(
         ^
SyntaxError: '(' was never closed
"""


def test_a_python_syntax_error_is_labelled_but_stays_a_runtime_error(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b""] = RunResult(exit_code=1, stderr=SYNTAX_ERROR)
    evaluation = run_cases(user, runtime, [], source="x = 1\ny = 2\nprint(\n")
    execution = evaluation.executions.get()
    assert execution.verdict == "runtime_error"
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "verdict") == "Runtime error"
    assert text_of(page, "verdict-detail") == (
        "Runtime error — the program did not start: SyntaxError at line 3"
    )


def test_the_label_per_test_case_follows_the_redaction_of_its_output(
    client: Client, user: Any, staff: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b"a"] = RunResult(exit_code=1, stderr=SYNTAX_ERROR)
    scripted[b"b"] = RunResult(exit_code=1, stderr=SYNTAX_ERROR)
    evaluation = run_cases(
        user,
        runtime,
        [
            {"stdin": "a", "expected_output": "x", "hidden": True},
            {"stdin": "b", "expected_output": "x"},
        ],
    )
    execution = evaluation.executions.get()
    assert (execution.verdict, execution.score) == ("runtime_error", 0)
    client.force_login(user)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert page.count("the program did not start: SyntaxError at line 3") == 2  # heading, case b
    client.force_login(staff)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert page.count("the program did not start: SyntaxError at line 3") == 3


def test_a_runtime_error_with_a_traceback_gets_no_label(
    logged_in: Client, user: Any, runtime: Runtime, scripted: dict[bytes, RunResult]
) -> None:
    scripted[b""] = RunResult(
        exit_code=1, stderr=b"Traceback (most recent call last):\n" + SYNTAX_ERROR
    )
    evaluation = run_cases(user, runtime, [])
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "did not start" not in page and 'id="verdict-detail"' not in page


# Run again -----------------------------------------------------------------------------------


def test_run_again_is_offered_only_once_the_latest_attempt_has_ended(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    execution = evaluation.executions.get()
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert 'id="rerun-button"' not in page and 'id="cancel-button"' in page
    response = logged_in.post(
        reverse("executions:evaluation-rerun", args=[evaluation.pk]), follow=True
    )
    assert (
        "Attempt 1 is still queued: wait for it to end, or cancel it" in response.content.decode()
    )
    assert evaluation.executions.count() == 1
    services.execution_run(execution.pk)
    live = logged_in.get(reverse("executions:evaluation-live", args=[evaluation.pk]))
    assert 'id="rerun-button"' in live.content.decode(), "the live section brings the button"
    logged_in.post(reverse("executions:evaluation-rerun", args=[evaluation.pk]))
    assert evaluation.executions.count() == 2


def test_run_again_is_refused_while_running(logged_in: Client, user: Any, runtime: Runtime) -> None:
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    assert services.execution_claim(evaluation.executions.get().pk) is not None
    response = logged_in.post(
        reverse("executions:evaluation-rerun", args=[evaluation.pk]), follow=True
    )
    assert "Attempt 1 is still running" in response.content.decode()
    assert evaluation.executions.count() == 1


# A compile step ------------------------------------------------------------------------------


def test_a_compilation_error_shows_the_compiler_output_escaped(
    logged_in: Client, user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = run_cases(
        user,
        compiling_runtime,
        [{"stdin": "secret-input", "expected_output": "secret-answer", "hidden": True}],
        source=fake(compile_exit_code=1, compile_stderr="main.c:1: <script>alert(1)</script>\0"),
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert (
        text_of(page, "verdict") == "Compilation error" and text_of(page, "score") == "0.00 / 100"
    )
    assert text_of(page, "compile-status") == "The compiler failed"
    assert text_of(page, "compile-exit-code") == "1"
    # The compiler's output is not a test case's: the submitter sees it, hidden cases or not.
    assert (
        text_of(page, "compile-output") == "main.c:1: &lt;script&gt;alert(1)&lt;/script&gt;\u2400"
    )
    assert "<script>alert(1)" not in page
    assert 'id="compile" open' in page and 'id="stdout"' not in page
    assert "secret-input" not in page


def test_invalid_utf8_from_a_compiler_is_shown_replaced(
    logged_in: Client, user: Any, compiling_runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {
        **settings.EXECUTIONS,
        "BACKEND": "tests.services.test_running.HostileCompiler",
    }
    evaluation = run_cases(user, compiling_runtime, [])
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "compile-output") == (
        "a\u2400b\ufffd\ufffd&lt;script&gt;alert(1)&lt;/script&gt;\ufffd(\u2400&lt;b&gt;"
    )
    assert "<script>alert(1)" not in page and "<b>" not in page


def test_a_compilers_flood_of_output_is_capped_and_says_so(
    logged_in: Client, user: Any, compiling_runtime: Runtime
) -> None:
    line = "main.c:1: error: <b>bad</b>\n"
    evaluation = run_cases(
        user,
        compiling_runtime,
        [],
        source=fake(compile_exit_code=1, compile_stdout=line, compile_repeat=5_000),
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    shown = html.unescape(text_of(page, "compile-output"))
    assert len(line) * 5_000 > COMPILE_OUTPUT_BYTES == len(shown.encode())
    assert shown.startswith(line) and "<b>" not in page
    assert "truncated at the compile step's output limit" in page


def test_a_compile_step_that_timed_out_says_so(
    logged_in: Client, user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = run_cases(
        user, compiling_runtime, [], source=fake(compile_timed_out=True, compile_signal=9)
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "verdict") == "Compilation error"
    assert text_of(page, "compile-status") == "Time limit exceeded"
    assert text_of(page, "compile-signal") == "9"


def test_a_successful_compile_is_folded_above_the_results(
    logged_in: Client, user: Any, compiling_runtime: Runtime
) -> None:
    evaluation = run_cases(
        user,
        compiling_runtime,
        [{"stdin": "7", "expected_output": "7"}],
        source=fake(compile_stderr="warning: unused variable"),
    )
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "verdict") == "Accepted"
    assert text_of(page, "compile-status") == "Compiled"
    assert text_of(page, "compile-output") == "warning: unused variable"
    assert 'id="compile" open' not in page
    assert page.index('id="compile"') < page.index('id="results"')


def test_a_runtime_without_a_compile_step_shows_no_compilation(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = run_cases(user, runtime, [{"stdin": "7", "expected_output": "7"}])
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert text_of(page, "verdict") == "Accepted" and 'id="compile"' not in page


def test_an_automatic_re_run_shows_in_the_history(
    logged_in: Client, user: Any, runtime: Runtime, settings: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "AUTO_RERUNS": 1}
    source = fake(error_kind="backend_error", error_message="The engine went away <mid-run>.")
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source=source)
    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert 'id="automatic-rerun"' in page, "the latest attempt says why it exists"
    history = page[page.index('id="history"') :]
    assert "run again automatically" in history
    assert "The engine went away &lt;mid-run&gt;." in history, "the first attempt says what broke"
    assert "<mid-run>" not in page
