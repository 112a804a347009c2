"""The evaluator pages: log in, submit, follow a run, cancel, re-run; and who may see what."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import Evaluation, Execution, Runtime
from sandbox.contract import ExecutionBackend, Isolation, RunRequest, RunResult

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def submit_form(runtime: Runtime, **overrides: str) -> dict[str, str]:
    data = {
        "title": "Echo",
        "runtime": runtime.name,
        "source": "print(input())\n",
        "stdin": "",
        "time_limit_ms": "",
        "memory_mb": "",
        "output_kb": "",
        "cases-TOTAL_FORMS": "2",
        "cases-INITIAL_FORMS": "0",
        "cases-MIN_NUM_FORMS": "0",
        "cases-MAX_NUM_FORMS": "50",
    }
    for index in range(2):
        data.update(
            {
                f"cases-{index}-name": "",
                f"cases-{index}-stdin": "",
                f"cases-{index}-expected_output": "",
                f"cases-{index}-comparison": "trailing_ws",
                f"cases-{index}-tolerance": "0.000001",
                f"cases-{index}-weight": "1",
            }
        )
    data.update(overrides)
    return data


def test_pages_require_login(client: Client) -> None:
    for name in ("executions:evaluation-list", "executions:evaluation-submit"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get("/login/").status_code == 200


def test_login_with_password(client: Client, user: Any) -> None:
    response = client.post(
        "/login/", {"username": "ada", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get(reverse("executions:evaluation-list")).status_code == 200


def test_empty_list_says_what_to_do(logged_in: Client) -> None:
    response = logged_in.get(reverse("executions:evaluation-list"))
    assert "Nothing submitted yet" in response.content.decode()


def test_submit_then_see_the_result(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        **{"cases-0-stdin": "7\n", "cases-0-expected_output": "7", "cases-0-weight": "3"},
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == evaluation.get_absolute_url()
    assert evaluation.test_cases.get().weight == 3

    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Queued" in page and 'http-equiv="refresh"' in page, "a queued run refreshes itself"

    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Finished" in page and "Accepted" in page and "100.00 / 100" in page
    assert 'http-equiv="refresh"' not in page


def test_submit_errors_are_shown_next_to_fields(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        source="print(1)",
        memory_mb="99999",
        **{
            "cases-1-stdin": "x",
            "cases-1-weight": "1",
            "cases-1-comparison": "numeric",
            "cases-1-tolerance": "-1",
        },
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    assert response.status_code == 200
    assert response.context["form"].errors["memory_mb"] == [
        "Must be at most 512, this runtime's cap."
    ]
    assert response.context["cases"].forms[1].errors["tolerance"] == [
        "Must be a non-negative number."
    ]
    assert not Evaluation.objects.exists()


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


def test_disabled_backend_banner_and_refusal(
    logged_in: Client, user: Any, runtime: Runtime, settings: Any, monkeypatch: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    assert 'id="disabled-banner"' in page and "inside a container" in page
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Refused" in page and "root on the" in page
    assert FakeBackend.runs == []
    assert Execution.objects.get().backend == "disabled"


def test_list_filters_by_latest_status_verdict_and_runtime(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    passed = services.evaluation_submit(user=user, runtime=runtime, source="print(1)", title="ok")
    services.execution_run(passed.executions.get().pk)
    failed = services.evaluation_submit(
        user=user, runtime=runtime, source='# fake: {"exit_code": 1}', title="crash"
    )
    services.execution_run(failed.executions.get().pk)
    services.evaluation_submit(user=user, runtime=runtime, source="print(1)", title="waiting")
    url = reverse("executions:evaluation-list")

    def titles(**query: str) -> list[str]:
        page = logged_in.get(url, query).context["page"]
        return [evaluation.title for evaluation in page.object_list]

    assert titles() == ["waiting", "crash", "ok"]
    assert titles(status="queued") == ["waiting"]
    assert titles(verdict="runtime_error") == ["crash"]
    assert titles(status="finished", verdict="accepted") == ["ok"]
    assert titles(runtime="other") == []
    assert "No evaluation matches" in logged_in.get(url, {"runtime": "other"}).content.decode()


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


def test_removed_test_cases_are_not_submitted(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        **{
            "cases-0-stdin": "1",
            "cases-0-expected_output": "1",
            "cases-0-DELETE": "on",
            "cases-1-stdin": "2",
            "cases-1-expected_output": "2",
        },
    )
    logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert list(evaluation.test_cases.values_list("stdin", flat=True)) == ["2"]


def test_submit_page_shows_runtime_limits(logged_in: Client, runtime: Runtime) -> None:
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    assert 'id="runtime-data"' in page and '"time_limit_ms": [5000, 10000]' in page
    assert "codemirror.js" in page


class ScriptedBackend(ExecutionBackend):
    """Answers each run with the result scripted for its stdin (else echoes it), so a test
    can give each test case the output, stderr and figures it needs."""

    name = "scripted"
    script: ClassVar[dict[bytes, RunResult]] = {}

    def run(self, request: RunRequest) -> RunResult:
        scripted = self.script.get(request.stdin, RunResult(exit_code=0, stdout=request.stdin))
        return dataclasses.replace(scripted, handle=request.handle)

    def describe(self) -> Isolation:
        return Isolation()


@pytest.fixture
def scripted(settings: Any) -> dict[bytes, RunResult]:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": "tests.test_web.ScriptedBackend"}
    ScriptedBackend.script = {}
    return ScriptedBackend.script


def run_cases(
    user: Any, runtime: Runtime, cases: list[dict[str, Any]], **kwargs: Any
) -> Evaluation:
    evaluation = services.evaluation_submit(
        user=user,
        runtime=runtime,
        source=kwargs.pop("source", "print(1)"),
        test_cases=cases,
        **kwargs,
    )
    services.execution_run(evaluation.executions.get().pk)
    return evaluation


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, f"no #{element_id} on the page"
    return match.group(1).strip()


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


# Run again, and edit and resubmit ------------------------------------------------------------


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


def resubmit_url(evaluation: Evaluation) -> str:
    return f"{reverse('executions:evaluation-submit')}?from={evaluation.pk}"


def hidden_and_visible(user: Any, runtime: Runtime) -> Evaluation:
    return services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(input())\n",
        stdin="unused",
        title="Echo",
        time_limit_ms=2000,
        memory_mb=64,
        output_kb=8,
        test_cases=[
            {"stdin": "visible-in", "expected_output": "visible-out", "weight": 2},
            {
                "stdin": "secret-in",
                "expected_output": "secret-out",
                "hidden": True,
                "comparison": "numeric",
                "tolerance": 0.5,
                "name": "big",
            },
        ],
    )


def test_the_owner_resubmits_with_everything_prefilled(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    detail = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert f'href="{resubmit_url(evaluation)}"' in detail
    response = logged_in.get(resubmit_url(evaluation))
    form, cases = response.context["form"], response.context["cases"]
    assert {name: form[name].value() for name in form.fields} == {
        "title": "Echo",
        "runtime": "python-3.11",
        "source": "print(input())\n",
        "stdin": "unused",
        "time_limit_ms": 2000,
        "memory_mb": 64,
        "output_kb": 8,
    }
    initial = [case.initial for case in cases.forms if case.initial]
    assert [case["stdin"] for case in initial] == ["visible-in", "secret-in"]
    assert initial[1] == {
        "name": "big",
        "stdin": "secret-in",
        "expected_output": "secret-out",
        "comparison": "numeric",
        "tolerance": 0.5,
        "weight": 1,
        "hidden": True,
    }
    page = response.content.decode()
    assert "secret-out" in page and 'id="resubmit-note"' in page and "not copied" not in page

    # Submitting the prefilled page as it is makes an equal, new evaluation.
    data = {key: str(value) for key, value in form.initial.items() if key != "runtime"}
    post = submit_form(runtime, **data)
    for index, case in enumerate(initial):
        post.update({f"cases-{index}-{key}": str(value) for key, value in case.items()})
    post["cases-1-hidden"] = "on"
    logged_in.post(reverse("executions:evaluation-submit"), post)
    copy = Evaluation.objects.exclude(pk=evaluation.pk).get()
    assert copy.files == evaluation.files and copy.stdin == "unused"
    assert (copy.time_limit_ms, copy.memory_mb, copy.output_kb) == (2000, 64, 8)
    fields = ("name", "stdin", "expected_output", "comparison", "tolerance", "weight", "hidden")
    assert list(copy.test_cases.values_list(*fields)) == list(
        evaluation.test_cases.values_list(*fields)
    )


def test_staff_resubmit_without_someone_elses_hidden_cases(
    client: Client, user: Any, staff: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    client.force_login(staff)
    response = client.get(resubmit_url(evaluation))
    assert response.status_code == 200
    assert [case.initial["stdin"] for case in response.context["cases"].forms if case.initial] == [
        "visible-in"
    ]
    page = response.content.decode()
    assert "secret-in" not in page and "secret-out" not in page
    assert "Its 1 hidden test case is not copied" in page


def test_nobody_else_may_resubmit(
    client: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    client.force_login(other_user)
    assert client.get(resubmit_url(evaluation)).status_code == 404
    assert client.get(f"{reverse('executions:evaluation-submit')}?from=x").status_code == 404


# Every submit error at once, and the login form ----------------------------------------------


def test_every_submit_error_is_reported_at_once(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        source="",
        memory_mb="99999",
        time_limit_ms="soon",
        **{
            "cases-0-stdin": "x",
            "cases-0-tolerance": "-1",
            "cases-0-comparison": "numeric",
            "cases-1-stdin": "y",
            "cases-1-weight": "0",
        },
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    assert response.status_code == 200
    form, cases = response.context["form"], response.context["cases"]
    assert form.errors == {
        "source": ["Source is empty."],
        "memory_mb": ["Must be at most 512, this runtime's cap."],
        "time_limit_ms": ["Must be a whole number."],
    }
    assert cases.forms[0].errors == {"tolerance": ["Must be a non-negative number."]}
    assert cases.forms[1].errors == {"weight": ["Must be a whole number from 1 to 1000."]}
    assert not Evaluation.objects.exists()


def test_textarea_line_breaks_are_stored_as_typed(logged_in: Client, runtime: Runtime) -> None:
    # Browsers submit a textarea's line breaks as CRLF whatever the page showed.
    data = submit_form(
        runtime,
        source="a = input()\r\nprint(a)\r\n",
        stdin="x\r\ny",
        **{"cases-0-stdin": "1\r\n2", "cases-0-expected_output": "1\r\n2\r\n"},
    )
    logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert evaluation.files[0]["content"] == "a = input()\nprint(a)\n"
    assert evaluation.stdin == "x\ny"
    case = evaluation.test_cases.get()
    assert (case.stdin, case.expected_output) == ("1\n2", "1\n2\n")


def test_login_fields_are_styled_alike(client: Client) -> None:
    page = client.get("/login/").content.decode()
    assert '<div class="field"><label for="id_username">' in page
    assert '<div class="field"><label for="id_password">' in page
