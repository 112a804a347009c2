"""The submit page: the form and its errors, the disabled-backend banner, edit and resubmit."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import Evaluation, Execution, Runtime

from .support import submit_form

pytestmark = pytest.mark.django_db


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


# Edit and resubmit ---------------------------------------------------------------------------


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


# Every submit error at once ------------------------------------------------------------------


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
