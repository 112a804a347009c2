"""The evaluator pages: log in, submit, follow a run, cancel, re-run; and who may see what."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import Evaluation, Execution, Runtime
from tests.test_services import HostileOutputBackend

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
        "BACKEND": "tests.test_services.HostileOutputBackend",
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
    monkeypatch.setattr("executions.security.container_evidence", lambda: "/.dockerenv exists")
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
